/**
 * What this process must not leave behind — /dev/shm folders, the launcher's private temp
 * folders, runtime children — removed when it ends: on 'exit', and on SIGINT, SIGTERM and
 * SIGHUP, which by default end Node without running 'exit' handlers.
 *
 * A signal listener takes the signal's default action away, so ours must give it back
 * without taking a decision that is the program's:
 * - no other listener for the signal: the program never asked to handle it, so it expects
 *   the default (death by that signal). Clean up, remove our listener (the default returns)
 *   and raise the signal again: the process dies of it, its parent sees the signal.
 * - another listener: the program handles the signal itself, perhaps to shut down
 *   gracefully (close a runtime, save a model) or to go on. Cleaning up now would kill its
 *   runtimes and remove their files under it, so do nothing: when it exits, 'exit' cleans up.
 */
type Task = () => void;

const tasks: Task[] = [];
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let installed = false;

/** Run `task` (synchronous: no event loop is left to await anything) once this process ends. */
export function atProcessEnd(task: Task): void {
  tasks.push(task);
  if (installed) return;
  installed = true;
  process.on('exit', runTasks);
  for (const sig of SIGNALS) process.on(sig, onSignal);
}

function runTasks(): void {
  for (const t of tasks) {
    try {
      t();
    } catch {
      // one failed removal must not keep the others from running
    }
  }
}

function onSignal(sig: NodeJS.Signals): void {
  if (process.listenerCount(sig) > 1) return;
  runTasks();
  process.removeListener(sig, onSignal);
  process.kill(process.pid, sig);
}
