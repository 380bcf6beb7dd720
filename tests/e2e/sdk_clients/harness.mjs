// What the SDK client tests share: their flags, a kvserve process on loopback, checks that count.
//
// Each test runs as `node TEST.mjs --server KVSERVE --model MODEL_DIR --chat-template TEMPLATE`,
// exits 0 when every check passed, 1 when one failed, and 77 (ctest's skip) when its SDK is not
// installed (scripts/install_deps.sh installs them with npm where npm is present).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const SKIP = 77;

// The SDK's default export, or a skip (with why) where it is not installed.
export async function importSdk(name) {
  try {
    return (await import(name)).default;
  } catch (e) {
    console.log(`skipped: the npm package ${name} is not installed here (${e.code ?? e.message}); ` +
                'scripts/install_deps.sh installs it (npm ci in tests/e2e/sdk_clients)');
    process.exit(SKIP);
  }
}

// --flag value pairs.
export function parseArgs(required) {
  const args = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i + 1 < argv.length; i += 2) args[argv[i].replace(/^--/, '')] = argv[i + 1];
  const missing = required.filter((name) => !args[name]);
  if (missing.length) {
    console.error(`missing ${missing.map((name) => '--' + name).join(', ')}`);
    process.exit(2);
  }
  return args;
}

let failures = 0, passes = 0;

export function check(ok, what, detail) {
  if (ok) {
    ++passes;
    console.log(`ok   ${what}`);
  } else {
    ++failures;
    console.log(`FAIL ${what}\n     ${JSON.stringify(detail)?.slice(0, 2000)}`);
  }
  return ok;
}

// Prints the count and exits: 0 when every check passed.
export function finish() {
  console.log(`${passes} passed, ${failures} failed`);
  process.exit(failures ? 1 : 0);
}

// One kvserve serving its HTTP API on a free loopback port, with bearer token `token`, the chat
// template `args['chat-template']` (read with the Hermes tool-call parser); resolves once it says
// where it serves, to its port and a stop().
export function startServer(args, token) {
  const dir = mkdtempSync(join(tmpdir(), 'kvserve-sdk-'));
  writeFileSync(join(dir, 'token'), token + '\n');
  const proc = spawn(args.server, ['--model', args.model, '--host', '127.0.0.1', '--port', '0', '--metrics-port', '-1',
                                   '--openai-host', '127.0.0.1', '--openai-port', '0', '--auth-token-file',
                                   join(dir, 'token'), '--chat-template', args['chat-template'],
                                   '--tool-call-parser', 'hermes'],
                     { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('kvserve did not start in 30 s:\n' + output.slice(-3000))), 30000);
    const read = (chunk) => {
      output += chunk;
      const m = output.match(/serving the OpenAI-compatible API on http:\/\/127\.0\.0\.1:(\d+)\/v1/);
      if (m) {
        clearTimeout(timer);
        resolve({ port: Number(m[1]), stop: () => { proc.kill('SIGTERM'); rmSync(dir, { recursive: true }); } });
      }
    };
    proc.stdout.on('data', read);
    proc.stderr.on('data', read);
    proc.on('exit', (code) => reject(new Error(`kvserve exited (${code}):\n` + output.slice(-3000))));
  });
}

// The rejection of `promise` (null if it resolved): the SDKs raise a class per HTTP status.
export async function rejection(promise) {
  return promise.then(() => null, (e) => e);
}
