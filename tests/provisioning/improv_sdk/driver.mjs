// Drives the official Improv serial SDK (improv-wifi-serial-sdk, unmodified)
// against a device on a pty. The SDK is written for Web Serial: PtyPort gives
// it the two things it uses of a SerialPort, `readable` and `writable` web
// streams, over the pty master file descriptor the test passes as argv[2].
//
// Requests arrive on stdin, one JSON object a line: {"op": ..., ...}; each is
// answered on stdout with one JSON line: {"ok": true|false, "state", "error",
// "nextUrl", "events", ...}. `events` lists the SDK's state-changed and
// error-changed events since the previous answer, in order.
import fs from "node:fs";
import readline from "node:readline";
import tty from "node:tty";
import { ImprovSerial } from "improv-wifi-serial-sdk/dist/serial.js";

class PtyPort {
  constructor(fd) {
    // A tty stream reads without blocking a libuv worker thread (which would hold
    // up the process's exit for as long as the line stays silent).
    const source = new tty.ReadStream(fd);
    this.readable = new ReadableStream({
      start(controller) {
        source.on("data", (chunk) => controller.enqueue(new Uint8Array(chunk)));
        source.on("end", () => controller.close());
        source.on("error", (error) => controller.error(error));
      },
      cancel() {
        source.pause();
      },
    });
    this.writable = new WritableStream({ write: (chunk) => writeAll(fd, chunk) });
  }
}

// The fd is non-blocking now (the tty stream made it so): a full line buffer
// answers EAGAIN, and the write is tried again a moment later.
async function writeAll(fd, chunk) {
  let offset = 0;
  while (offset < chunk.length) {
    try {
      offset += fs.writeSync(fd, chunk, offset);
    } catch (error) {
      if (error.code !== "EAGAIN") throw error;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
}

const logger = {
  log: (...args) => console.error("[sdk]", ...args),
  debug: (...args) => {
    if (process.env.IMPROV_SDK_DEBUG) console.error("[sdk:debug]", ...args);
  },
  error: (...args) => console.error("[sdk:error]", ...args),
};

const improv = new ImprovSerial(new PtyPort(Number(process.argv[2])), logger);
const events = [];
improv.addEventListener("state-changed", (e) => events.push({ type: "state", value: e.detail }));
improv.addEventListener("error-changed", (e) => events.push({ type: "error", value: e.detail }));

// Milliseconds; the SDK's own defaults are 30 s, longer than a test should hang.
const RPC_TIMEOUT = 5000;
const PROVISION_TIMEOUT = 15000;

const operations = {
  initialize: async (request) => ({ info: await improv.initialize(request.timeout ?? 1000) }),
  state: async () => {
    await improv.requestCurrentState(RPC_TIMEOUT);
    return {};
  },
  info: async () => {
    await improv.requestInfo(RPC_TIMEOUT);
    return { info: improv.info };
  },
  scan: async () => ({ networks: await improv.scan(RPC_TIMEOUT) }),
  provision: async (request) => {
    await improv.provision(request.ssid, request.password, PROVISION_TIMEOUT);
    return {};
  },
};

function answer(fields) {
  const drained = events.splice(0, events.length);
  const body = {
    state: improv.state ?? null,
    error: improv.error,
    nextUrl: improv.nextUrl ?? null,
    events: drained,
    ...fields,
  };
  process.stdout.write(JSON.stringify(body) + "\n");
}

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const request = JSON.parse(line);
  if (request.op === "exit") break;
  const operation = operations[request.op];
  if (!operation) {
    answer({ ok: false, message: `unknown op ${request.op}` });
    continue;
  }
  try {
    answer({ ok: true, ...(await operation(request)) });
  } catch (error) {
    answer({ ok: false, message: String(error?.message ?? error) });
  }
}
process.exit(0);
