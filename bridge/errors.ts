/**
 * The one table of error codes (protocol v1, docs/protocol.md §6). The Python runtime has
 * the same table in `liaison_runtime/errors.py`; both are checked against
 * `test/protocol/vectors.json`.
 */
export const ERROR_CODES = {
  E_PROTOCOL: 'malformed message: bad frames, not msgpack, missing or mistyped header fields',
  E_VERSION: 'the peer speaks another major version of the protocol',
  E_AUTH: 'missing or wrong HMAC signature, or a timestamp outside the allowed window',
  E_REPLAY: 'a signed message that was already received once',
  E_SESSION: 'unknown or closed session id (a runtime restart ends every session)',
  E_UNKNOWN_OP: "no op of that name in the runtime's op table",
  E_ARG: 'an argument is missing, unexpected, or of the wrong kind or value',
  E_DTYPE: 'a tensor argument has a dtype the op does not accept',
  E_SHAPE: 'tensor shapes do not fit the op',
  E_HANDLE: 'a handle that does not exist in this session (never created, or freed)',
  E_OP_FAILED: 'the op raised while running; the message and traceback say why',
  E_OOM: 'the device ran out of memory',
  E_INTERNAL: 'a bug in the runtime; the traceback says where',
  E_TIMEOUT: 'client side: no reply within the request\'s timeout',
  E_DEAD: 'client side: the runtime process exited or the connection was lost',
  E_CLOSED: 'client side: the client was closed while the request was pending',
  E_SPAWN: 'client side: the local runtime could not be started',
  E_TRACE: "a program's traced code did what a program cannot: read a value, await, or leak a placeholder",
  E_LIMIT: 'a limit of this runtime refused the request: message size, session count',
  E_NONFINITE: 'a value that must be finite (a training loss, an input) was NaN or infinite',
  E_GROUP:
    'a rank of a group died, could not be reached, disagreed about the group, or a collective failed or timed out',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** What the runtime sends in `error` (docs/protocol.md §6). */
export interface WireError {
  code: string;
  message: string;
  op?: string;
  index?: number;
  param?: string;
  handle?: number;
  traceback?: string;
}

/**
 * Every failure the bridge reports. `code` is from {@link ERROR_CODES}; `op`, `index`,
 * `param` and `pythonTraceback` are filled when the runtime knows them.
 */
export class LiaisonError extends Error {
  override name = 'LiaisonError';
  readonly code: ErrorCode;
  readonly op?: string;
  readonly index?: number;
  readonly param?: string;
  readonly handle?: number;
  readonly pythonTraceback?: string;

  constructor(code: ErrorCode, message: string, extra: Omit<WireError, 'code' | 'message'> & { cause?: unknown } = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.code = code;
    this.op = extra.op;
    this.index = extra.index;
    this.param = extra.param;
    this.handle = extra.handle;
    this.pythonTraceback = extra.traceback;
  }

  /** An error from a reply; an unknown code (a newer runtime) becomes E_INTERNAL with the code kept in the text. */
  static fromWire(e: WireError): LiaisonError {
    const known = (e.code in ERROR_CODES ? e.code : 'E_INTERNAL') as ErrorCode;
    const msg = known === e.code ? e.message : `${e.code}: ${e.message}`;
    const err = new LiaisonError(known, msg, e);
    if (e.traceback) err.stack = `${err.stack}\n--- Python traceback ---\n${e.traceback}`;
    return err;
  }
}
