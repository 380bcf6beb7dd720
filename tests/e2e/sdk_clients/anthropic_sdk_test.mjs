#!/usr/bin/env node
// Anthropic's own TypeScript SDK (@anthropic-ai/sdk, pinned in package.json) against the real
// kvserve binary on loopback: what kvserve's Messages API writes must be what the SDK reads, as
// the clients built on it (coding agents among them) read it. The SDK parses the replies, the
// server-sent events (its MessageStream accumulates the final message from them, partial tool
// JSON included) and the errors (an exception class per HTTP status); the expected values are the
// chat endpoint's own reply to the same conversation, greedy, fetched beside it.
//
//   node tests/e2e/sdk_clients/anthropic_sdk_test.mjs --server build/cpu/server/kvserve \
//        --model tests/data/models/tiny-llama --chat-template tests/data/chat_templates/hermes_tools.jinja
//
// (A chat template that renders tools and tool results, Hermes' format, read with its parser;
// harness.mjs has the exit codes, and how the SDK is installed.)
import { isDeepStrictEqual } from 'node:util';

import { check, finish, importSdk, parseArgs, rejection, startServer } from './harness.mjs';

const Anthropic = await importSdk('@anthropic-ai/sdk');
const args = parseArgs(['server', 'model', 'chat-template']);

const TOKEN = 's3cret';
const server = await startServer(args, TOKEN);
const base = `http://127.0.0.1:${server.port}`;
// No retries: a refusal must show as the error the SDK raises for it, at once.
const client = new Anthropic({ baseURL: base, apiKey: TOKEN, maxRetries: 0 });

// The chat endpoint's reply to a conversation: the reference.
async function chat(body) {
  const r = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify(body),
  });
  if (r.status !== 200) throw new Error(`chat reference: ${r.status} ${await r.text()}`);
  return r.json();
}

try {
  const models = await fetch(`${base}/v1/models`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  const model = (await models.json()).data[0].id;

  // Text: greedy, so the reply is the chat endpoint's for the same conversation.
  const system = 'Be brief.';
  const messages = [{ role: 'user', content: 'Hello?' }, { role: 'assistant', content: 'Hi.' },
                    { role: 'user', content: 'Why is the sky blue?' }];
  const reference = await chat({ messages: [{ role: 'system', content: system }, ...messages], temperature: 0,
                                 max_tokens: 16, ignore_eos: true });
  const want = reference.choices[0].message.content;
  const params = { model, system, messages, max_tokens: 16, temperature: 0, ignore_eos: true };
  const message = await client.messages.create(params);
  check(message.type === 'message' && message.role === 'assistant' && message.model === model &&
            message.id.startsWith('msg_'),
        'messages.create: a message from the assistant, naming the model', message);
  check(message.content.length === 1 && message.content[0].type === 'text' && message.content[0].text === want,
        "messages.create: one text block, the chat endpoint's greedy reply", { got: message.content, want });
  check(message.stop_reason === 'max_tokens' && message.stop_sequence === null,
        'messages.create: stop_reason max_tokens at the limit', message);
  check(message.usage.input_tokens + message.usage.cache_read_input_tokens === reference.usage.prompt_tokens &&
            message.usage.output_tokens === 16 && message.usage.cache_creation_input_tokens === 0,
        'messages.create: usage counts the prompt (cached tokens apart) and the reply', { got: message.usage,
                                                                                      chat: reference.usage });

  // Streamed: the SDK's MessageStream puts the message together from the events.
  const stream = client.messages.stream(params);
  let text = '', startUsage = null;
  stream.on('text', (delta) => { text += delta; });
  stream.on('streamEvent', (event) => { if (event.type === 'message_start') startUsage = event.message.usage; });
  const streamed = await stream.finalMessage();
  check(text === want && isDeepStrictEqual(streamed.content, message.content),
        "messages.stream: the text events and the final message's content are the whole reply's", {
          text, content: streamed.content });
  check(startUsage && startUsage.input_tokens + startUsage.cache_read_input_tokens === reference.usage.prompt_tokens,
        "messages.stream: message_start already counts the prompt", startUsage);
  check(streamed.stop_reason === 'max_tokens' && isDeepStrictEqual(streamed.usage, message.usage),
        "messages.stream: the final message's stop_reason and usage (from message_delta) are the whole reply's",
        { streamed: streamed.usage, whole: message.usage });

  // A stop sequence from the middle of the reply (two ASCII characters: whole characters) ends it
  // there, and is named.
  let stop = '';
  for (let at = Math.floor(want.length / 2); at + 2 <= want.length && !stop; ++at)
    if (/^[\x00-\x7f]{2}$/.test(want.slice(at, at + 2))) stop = want.slice(at, at + 2);
  if (check(stop !== '', 'the greedy reply has two ASCII characters in its second half', want)) {
    const stopped = await client.messages.create({ ...params, stop_sequences: ['#never#', stop] });
    check(stopped.stop_reason === 'stop_sequence' && stopped.stop_sequence === stop &&
              stopped.content[0]?.text === want.slice(0, want.indexOf(stop)),
          'messages.create: a stop sequence ends the reply there and is named', { stopped, stop });
  }

  // A forced tool use: a tool_use block whose input is an object of the tool's schema; streamed,
  // the SDK parses the partial JSON into the same input.
  const tools = [{ name: 'get_weather', description: 'Weather now', input_schema: {
    type: 'object', properties: { city: { enum: ['Oslo', 'Rome', 'Lima'] }, days: { type: 'integer' } },
    required: ['city', 'days'] } }];
  const toolParams = { model, max_tokens: 64, messages: [{ role: 'user', content: 'Weather in Oslo?' }], tools,
                       tool_choice: { type: 'tool', name: 'get_weather' }, temperature: 0 };
  const called = await client.messages.create(toolParams);
  const call = called.content[0];
  check(called.content.length === 1 && call.type === 'tool_use' && call.name === 'get_weather' &&
            typeof call.id === 'string' && ['Oslo', 'Rome', 'Lima'].includes(call.input.city) &&
            Number.isInteger(call.input.days) && called.stop_reason === 'tool_use',
        'messages.create with tool_choice tool: one tool_use block, its input of the schema, stop_reason tool_use',
        called);
  const streamedCall = await client.messages.stream(toolParams).finalMessage();
  check(isDeepStrictEqual(streamedCall.content.map(({ id, ...rest }) => rest),
                          called.content.map(({ id, ...rest }) => rest)),
        'messages.stream with a tool: the SDK parses the streamed partial JSON into the same input',
        { streamed: streamedCall.content, whole: called.content });

  // The next turn, the call and its result: the prompt the chat endpoint renders for the same
  // conversation (the assistant's call as tool_calls, the result as a tool message), counted both
  // by count_tokens and in the reply's usage.
  const turn = [{ role: 'user', content: 'Weather in Oslo?' }, { role: 'assistant', content: called.content },
                { role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id, content: 'sunny, 21 C' }] }];
  const answered = await client.messages.create({ model, max_tokens: 4, messages: turn, tools, temperature: 0 });
  const chatTurn = await chat({ messages: [{ role: 'user', content: 'Weather in Oslo?' },
                                           { role: 'assistant', content: null, tool_calls: [{
                                             id: call.id, type: 'function',
                                             function: { name: 'get_weather', arguments: JSON.stringify(call.input) } }] },
                                           { role: 'tool', tool_call_id: call.id, content: 'sunny, 21 C' }],
                                tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather now',
                                                                        parameters: tools[0].input_schema } }],
                                max_tokens: 4, temperature: 0 });
  const prompt = chatTurn.usage.prompt_tokens;
  check(answered.usage.input_tokens + answered.usage.cache_read_input_tokens === prompt &&
            answered.usage.cache_read_input_tokens > 0,
        "a tool_result turn: the chat endpoint's prompt for the conversation, its shared prefix found cached",
        { messages: answered.usage, chat: chatTurn.usage });
  const counted = await client.messages.countTokens({ model, messages: turn, tools });
  check(counted.input_tokens === prompt, "messages.countTokens: the prompt's tokens, as the chat endpoint's",
        { counted, chat: chatTurn.usage });

  // Errors: the SDK's exception class for each status, with Anthropic's error type.
  const noKey = await rejection(new Anthropic({ baseURL: base, apiKey: 'wrong', maxRetries: 0 }).messages.create(params));
  check(noKey instanceof Anthropic.AuthenticationError && noKey.error?.error?.type === 'authentication_error',
        'a wrong API key: AuthenticationError (401, authentication_error)', String(noKey));
  const otherModel = await rejection(client.messages.create({ ...params, model: 'claude-sonnet-4-5' }));
  check(otherModel instanceof Anthropic.NotFoundError && otherModel.error?.error?.type === 'not_found_error',
        'another model: NotFoundError (404, not_found_error)', String(otherModel));
  const { max_tokens: _, ...noMax } = params;
  const missing = await rejection(client.messages.create(noMax));
  check(missing instanceof Anthropic.BadRequestError && missing.error?.error?.type === 'invalid_request_error' &&
            /max_tokens/.test(missing.error?.error?.message),
        'no max_tokens: BadRequestError (400, invalid_request_error) naming it', String(missing));
  const image = await rejection(client.messages.create({ ...params, messages: [{ role: 'user', content: [
    { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }] }] }));
  check(image instanceof Anthropic.BadRequestError && /messages\[0\]\.content\[0\]\.type/.test(image.message),
        'an image block: BadRequestError naming the block', String(image));
  const after = await client.messages.create({ ...params, max_tokens: 2 });
  check(after.usage.output_tokens === 2, 'the server serves on after the refusals', after);
} catch (e) {
  check(false, 'no exception escapes the checks', e.stack ?? String(e));
} finally {
  server.stop();
}
finish();
