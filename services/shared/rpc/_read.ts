/**
 * Reads the messages of a grpc-js stream as an async iterable WITHOUT `for await` on the stream itself:
 * Node's readable async iterator destroys the stream when the loop ends, which on a duplex call also kills
 * the writing side, so a bidirectional handler could never send its final status (grpc/grpc-node#1839).
 * Events plus pause/resume give the same back-pressure and leave the stream alone.
 */
import type { Readable } from "node:stream";

const HIGH_WATER = 16;

export async function* readMessages<T>(stream: Readable, signal?: AbortSignal): AsyncGenerator<T> {
  const queue: T[] = [];
  let ended = false;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const resolve = wake;
    wake = undefined;
    resolve?.();
  };
  const onData = (message: T) => {
    queue.push(message);
    if (queue.length >= HIGH_WATER) stream.pause();
    notify();
  };
  const onEnd = () => {
    ended = true;
    notify();
  };
  const onError = (error: unknown) => {
    failure ??= { error };
    notify();
  };
  const onAbort = () => onError(signal!.reason);
  stream.on("data", onData);
  stream.on("end", onEnd);
  stream.on("error", onError);
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    while (true) {
      if (queue.length > 0) {
        const message = queue.shift()!;
        if (queue.length < HIGH_WATER / 2 && stream.isPaused()) stream.resume();
        yield message;
        continue;
      }
      if (failure) throw failure.error;
      if (ended) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    stream.off("data", onData);
    stream.off("end", onEnd);
    stream.off("error", onError);
    signal?.removeEventListener("abort", onAbort);
  }
}
