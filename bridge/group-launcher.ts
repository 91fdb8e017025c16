/**
 * Starts a local group: `torchrun` (`python -m torch.distributed.run`) launching N runtime
 * ranks (`python -m liaison_runtime --group`), each on its own ipc:// socket in one private
 * folder, owned by this Node process.
 *
 * torchrun starts every worker in a session of its own, so killing the agent's process
 * group does not reach them: the ranks are stopped by their pids (from their ready lines),
 * and each rank also exits by itself once this process is gone (`--watch-pid`), which
 * covers a SIGKILLed Node with the agent still sitting in between.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { atProcessEnd } from './cleanup.js';
import { LiaisonError } from './errors.js';
import { limitArgs, own, privateEndpoint, resolvePython, runtimeEnv, type SpawnOptions } from './launcher.js';

export interface GroupSpawnOptions extends SpawnOptions {
  /** The world size: how many ranks the group has. */
  ranks: number;
  /** A collective waiting longer than this fails with E_GROUP (`--collective-timeout-s`; default 60). */
  collectiveTimeoutS?: number;
  /** Machines taking part (default 1); with more, this call starts `ranks / nnodes` of them and joins `rdzvEndpoint`. */
  nnodes?: number;
  /** `host:port` of torchrun's c10d rendezvous, for several machines. */
  rdzvEndpoint?: string;
  /** How long the rendezvous may wait for every machine to join (default 60 s). */
  rdzvTimeoutS?: number;
  /** The HMAC key of a group on several machines, whose ranks bind tcp (default LIAISON_KEY). */
  key?: Uint8Array | string;
}

/** One rank as its ready line describes it. */
export interface RankProcess {
  rank: number;
  pid: number;
  endpoint: string;
  ready: Record<string, unknown>;
}

export interface GroupProcess {
  /** torchrun's agent. */
  readonly pid: number;
  /** This machine's ranks, in rank order. */
  readonly ranks: readonly RankProcess[];
  /** The agent's and the ranks' last lines of stderr. */
  stderrTail(): string;
  /** Resolves with how the agent ended, once it has. */
  readonly exited: Promise<string>;
  /** Whether the agent has exited. */
  readonly agentGone: boolean;
  /** SIGTERM the agent and every rank, SIGKILL whoever is left after `graceMs`, and wait until all are gone. */
  kill(graceMs?: number): Promise<void>;
}

/** Whether process `pid` still exists (a zombie of ours counts as gone: it runs nothing). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The command line: torchrun's flags, then the runtime's. */
export function groupArgs(opts: GroupSpawnOptions, endpoint: string): string[] {
  const nnodes = opts.nnodes ?? 1;
  const perNode = opts.ranks / nnodes;
  const agent = ['-m', 'torch.distributed.run', '--nnodes', String(nnodes), '--nproc-per-node', String(perNode), '--max-restarts', '0'];
  if (nnodes === 1 && !opts.rdzvEndpoint) agent.push('--standalone');
  else {
    // join_timeout: every machine joined; read_timeout: the store answers (an unreachable host fails after it)
    const s = opts.rdzvTimeoutS ?? 60;
    agent.push('--rdzv-backend', 'c10d', '--rdzv-endpoint', opts.rdzvEndpoint!, '--rdzv-conf', `join_timeout=${s},read_timeout=${s}`);
  }
  const rt = ['-m', 'liaison_runtime', '--group', '--endpoint', endpoint, '--watch-pid', String(process.pid)];
  if (opts.device) rt.push('--device', opts.device);
  if (opts.threads) rt.push('--threads', String(opts.threads));
  if (opts.collectiveTimeoutS !== undefined) rt.push('--collective-timeout-s', String(opts.collectiveTimeoutS));
  if (opts.fileRoot !== undefined) rt.push('--file-root', resolve(opts.fileRoot));
  return [...agent, ...rt, ...limitArgs(opts.limits)];
}

const rankPids = new Set<number>();
let exitHook = false;

/** Spawn torchrun with this machine's ranks and wait for every rank's ready line. */
export async function spawnGroup(opts: GroupSpawnOptions): Promise<GroupProcess> {
  const python = resolvePython(opts.python);
  const nnodes = opts.nnodes ?? 1;
  const local = opts.ranks / nnodes;
  const key = opts.key ?? process.env.LIAISON_KEY;
  if (nnodes > 1 && !key?.length) throw new LiaisonError('E_ARG', 'Group.start: a group on several machines binds tcp, where every message is signed: pass { key } or set LIAISON_KEY', { param: 'key' });
  const { dir } = privateEndpoint();
  // a rank's endpoint: its own socket in the private folder (the runtime fills in {rank}),
  // or tcp on every interface when ranks on other machines must reach it
  const endpoint = nnodes > 1 ? 'tcp://0.0.0.0:0' : `ipc://${dir}/rank{rank}.sock`;
  const args = groupArgs(opts, endpoint);
  if (nnodes > 1) {
    writeFileSync(join(dir, 'key'), key!, { mode: 0o600 });
    args.push('--allow-remote', '--key-file', join(dir, 'key'));
  }
  const child = spawn(python, args, { env: runtimeEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
  const owned = own(child, dir);
  if (!exitHook) {
    exitHook = true;
    // own() SIGKILLs the agent when this process ends; the ranks live in sessions of their own
    atProcessEnd(() => { for (const pid of rankPids) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } });
  }
  const ranks: RankProcess[] = [];
  let agentGone = false;
  void owned.exited.then(() => { agentGone = true; });

  const tail: string[] = [];
  const forward = opts.inheritStderr ?? Boolean(process.env.LIAISON_LOG);
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    if (forward) process.stderr.write(s);
    tail.push(s);
    if (tail.length > 200) tail.splice(0, tail.length - 200);
  });
  const stderrTail = () => tail.join('').split('\n').slice(-30).join('\n').trim();

  const kill = async (graceMs = 2000): Promise<void> => {
    const pids = ranks.map((r) => r.pid);
    for (const pid of pids) if (alive(pid)) try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
    const stopping = owned.stop(); // SIGTERM, SIGKILL after 3 s
    const deadline = Date.now() + graceMs;
    while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const pid of pids) if (alive(pid)) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    await stopping;
    while (pids.some(alive)) await new Promise((r) => setTimeout(r, 20));
    for (const pid of pids) rankPids.delete(pid);
  };

  // several machines: the rendezvous' own timeouts, plus importing torch (a fallback, should torchrun hang)
  const startMs = opts.startTimeoutMs ?? (nnodes > 1 ? (opts.rdzvTimeoutS ?? 60) * 2000 + 60_000 : 120_000);
  const what = () => (nnodes > 1 ? `the group's rendezvous at ${opts.rdzvEndpoint} (${nnodes} machines)` : `the group of ${opts.ranks} ranks`);
  try {
    await new Promise<void>((res, rej) => {
      let buf = '';
      const timer = setTimeout(() => rej(new LiaisonError('E_SPAWN', `${what()} did not start within ${startMs} ms (${ranks.length} of ${local} ranks ready).\n${stderrTail()}`)), startMs);
      child.on('error', (e) => {
        clearTimeout(timer);
        rej(new LiaisonError('E_SPAWN', `cannot start ${python}: ${e.message}`));
      });
      void owned.exited.then((how) => {
        clearTimeout(timer);
        const text = tail.join('');
        const rdzv = /Rendezvous\w*Error/.exec(text);
        const last = /^\S*(?:Error|Exception)\b.*$/gm;
        const cause = [...text.matchAll(last)].pop()?.[0];
        rej(new LiaisonError('E_SPAWN', rdzv
          ? `${what()} failed (rendezvous timeout ${opts.rdzvTimeoutS ?? 60} s): ${(cause ?? rdzv[0]).replace(/\.+$/, '')}. Is torchrun started on every machine with the same --rdzv-endpoint, and can this machine reach it?`
          : `torchrun ${how} before ${what()} was ready (${ranks.length} of ${local} ranks ready)${failureOf(text)}`));
      });
      child.stdout!.setEncoding('utf8').on('data', (s: string) => {
        buf += s;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          // torchrun may prefix a worker's lines with its rank (`[rank0]:`); accept either
          const m = /LIAISON_READY (\{.*\})\s*$/.exec(line);
          if (!m) continue;
          const ready = JSON.parse(m[1]) as Record<string, unknown>;
          const r: RankProcess = { rank: Number(ready.rank), pid: Number(ready.pid), endpoint: String(ready.endpoint), ready };
          ranks.push(r);
          rankPids.add(r.pid);
          if (ranks.length === local) {
            clearTimeout(timer);
            res();
          }
        }
      });
    });
  } catch (e) {
    await kill(500);
    throw e;
  }
  ranks.sort((a, b) => a.rank - b.rank);
  return { pid: child.pid!, ranks, stderrTail, exited: owned.exited, get agentGone() { return agentGone; }, kill };
}

/**
 * What a failed start says: torchrun's root cause (which rank, its exit code) and the
 * ranks' own last lines, which come before the agent's traceback and report.
 */
function failureOf(text: string): string {
  const agent = text.indexOf('torch/distributed/run.py", line');
  const ranks = agent < 0 ? text : text.slice(0, Math.max(0, text.lastIndexOf('Traceback (most recent call last):', agent)));
  const root = /Root Cause[^\n]*\n[\s\S]*?rank\s*:\s*(\d+)[\s\S]*?exitcode\s*:\s*(-?\d+)/.exec(text);
  const own = ranks.split('\n').filter((l) => l.trim() && !/^\*+$|OMP_NUM_THREADS|^[WEI]\d{4} .*torch\/distributed\//.test(l)).slice(-15).join('\n');
  return `${root ? `: rank ${root[1]} exited with code ${root[2]}` : ''}.${own ? `\nThe ranks' last output:\n${own}` : ''}`;
}
