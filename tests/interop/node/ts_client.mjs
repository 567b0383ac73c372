// The official TypeScript MCP client (npm @modelcontextprotocol/sdk) as an OAuth client of an MCP
// server: StreamableHTTPClientTransport with the non-interactive ClientCredentialsProvider.
//
// The first line of stdin is the task, as JSON:
//   {"url": "http://127.0.0.1:PORT/mcp", "issuer": "http://127.0.0.1:AS", "client_id": "...",
//    "client_secret": "...", "scope": "a b", "calls": [{"name": "echo", "arguments": {"text": "hi"}}, ...]}
// (`scope` is what the token request asks for: in this SDK version the client credentials grant
// sends the provider's configured scope, not the challenge's `scope=` or `scopes_supported`.)
// It connects (the first request meets a 401 and the provider runs discovery and the client
// credentials grant), lists the tools, makes each call in turn and closes the session. It prints
// one JSON line: every HTTP exchange it made ({method, url, status, www_authenticate, form}; `form`
// is the token request's body without secrets), the tool names, and each call's result or error.
import { createInterface } from 'node:readline';

import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const task = await new Promise((resolve) => {
  createInterface({ input: process.stdin }).once('line', (line) => resolve(JSON.parse(line)));
});

const exchanges = [];
async function recordingFetch(input, init = {}) {
  const request = new Request(input, init);
  const entry = { method: request.method, url: request.url };
  if (request.headers.get('content-type')?.startsWith('application/x-www-form-urlencoded')) {
    const form = Object.fromEntries(new URLSearchParams(await request.clone().text()));
    delete form.client_secret;
    entry.form = form;
  }
  const response = await fetch(request);
  entry.status = response.status;
  entry.www_authenticate = response.headers.get('www-authenticate');
  exchanges.push(entry);
  return response;
}

const provider = new ClientCredentialsProvider({
  clientId: task.client_id,
  clientSecret: task.client_secret,
  expectedIssuer: task.issuer,
  scope: task.scope,
});
const transport = new StreamableHTTPClientTransport(new URL(task.url), { authProvider: provider, fetch: recordingFetch });
const client = new Client({ name: 'enforcer-interop-ts-client', version: '1.0.0' });
const report = { exchanges, calls: [] };
try {
  await client.connect(transport);
  report.session = transport.sessionId ?? null;
  report.protocol_version = transport.protocolVersion ?? null;
  report.tools = (await client.listTools()).tools.map((tool) => tool.name);
  for (const call of task.calls ?? []) {
    try {
      report.calls.push({ name: call.name, result: await client.callTool(call) });
    } catch (error) {
      report.calls.push({ name: call.name, error: String(error?.message ?? error), code: error?.code ?? null });
    }
  }
  await transport.terminateSession();
  await client.close();
} catch (error) {
  report.error = String(error?.stack ?? error);
}
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exit(report.error ? 1 : 0);
