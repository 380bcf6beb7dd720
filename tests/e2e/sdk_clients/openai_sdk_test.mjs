#!/usr/bin/env node
// OpenAI's own TypeScript SDK (openai, pinned in package.json) against the real kvserve binary on
// loopback: what kvserve's OpenAI-compatible API writes must be what the SDK reads. Its helpers
// are what check the shapes here: ChatCompletionStream and ResponseStream put the final object
// together from the server-sent events (each must equal the whole reply to the same greedy
// request), chat.completions.parse reads a json_schema reply and a strict tool's arguments,
// embeddings.create asks for base64 by default and decodes it (it must equal the floats asked for
// as such), responses.inputItems.list pages, and each error is its class for the HTTP status. That
// the greedy text is the model's own is checked elsewhere (the C++ end-to-end tests, against the
// gRPC API and PyTorch); here the Responses API's text must equal the chat endpoint's.
//
//   node tests/e2e/sdk_clients/openai_sdk_test.mjs --server build/cpu/server/kvserve \
//        --model tests/data/models/tiny-llama --chat-template tests/data/chat_templates/hermes_tools.jinja
//
// (harness.mjs has the exit codes, and how the SDK is installed.)
import { isDeepStrictEqual } from 'node:util';

import { check, finish, importSdk, parseArgs, rejection, startServer } from './harness.mjs';

const OpenAI = await importSdk('openai');
const args = parseArgs(['server', 'model', 'chat-template']);

const TOKEN = 's3cret';
const server = await startServer(args, TOKEN);
// No retries: a refusal must show as the error the SDK raises for it, at once.
const client = new OpenAI({ baseURL: `http://127.0.0.1:${server.port}/v1`, apiKey: TOKEN, maxRetries: 0 });

// `object` without the keys that differ between two requests for the same reply (ids, times,
// the prompt tokens a second request finds cached) or that the SDK's stream helpers add (parsed).
function withoutIds(object) {
  const varying = ['id', 'created', 'created_at', 'call_id', 'item_id', 'system_fingerprint', 'cached_tokens', 'parsed'];
  return JSON.parse(JSON.stringify(object, (key, value) => (varying.includes(key) ? undefined : value)));
}

// Two chat replies' logprobs: the same tokens, alternatives and values within 1e-4. (A second
// request finds the prompt's blocks cached and computes only the rest: the same float32 sums in
// another order, last bits apart; 1e-4 on values near -5 is far above that and far below any real
// difference between tokens.)
function sameLogprobs(a, b) {
  const entries = (lp) => lp.content.map((e) => [e, ...e.top_logprobs]).flat();
  const x = entries(a), y = entries(b);
  return x.length === y.length &&
         x.every((e, i) => e.token === y[i].token && Math.abs(e.logprob - y[i].logprob) <= 1e-4);
}

try {
  const models = await client.models.list();
  const model = models.data[0]?.id;
  check(models.data.length >= 1 && typeof model === 'string' && models.data[0].object === 'model',
        'models.list: the served model', models.data);

  // Chat: the stream helper's final completion is the whole reply (logprobs and usage included).
  const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Why is the sky blue?' }];
  const params = { model, messages, temperature: 0, max_tokens: 12, ignore_eos: true, logprobs: true, top_logprobs: 2 };
  const whole = await client.chat.completions.create(params);
  const text = whole.choices[0].message.content;
  check(whole.object === 'chat.completion' && typeof text === 'string' && text.length > 0 &&
            whole.choices[0].finish_reason === 'length' && whole.usage.completion_tokens === 12 &&
            whole.choices[0].logprobs.content.length === 12,
        'chat.completions.create: a completion of 12 tokens with their logprobs', whole);
  const stream = client.chat.completions.stream({ ...params, stream_options: { include_usage: true } });
  let deltas = '';
  stream.on('content', (delta) => { deltas += delta; });
  const streamed = await stream.finalChatCompletion();
  check(deltas === text && streamed.choices[0].message.content === text &&
            sameLogprobs(streamed.choices[0].logprobs, whole.choices[0].logprobs) &&
            streamed.choices[0].finish_reason === 'length' &&
            isDeepStrictEqual(withoutIds(streamed.usage), withoutIds(whole.usage)),
        "chat.completions.stream: the content events and the final completion are the whole reply's",
        { deltas, streamed: streamed.choices[0], usage: streamed.usage, whole: whole.usage });

  // Structured output: parse() reads the json_schema reply into message.parsed.
  const schema = { type: 'object', properties: { city: { enum: ['Oslo', 'Rome'] }, days: { type: 'integer' } },
                   required: ['city', 'days'], additionalProperties: false };
  const parsed = await client.chat.completions.parse({
    model, messages: [{ role: 'user', content: 'Where?' }], max_tokens: 40, temperature: 0,
    response_format: { type: 'json_schema', json_schema: { name: 'place', schema, strict: true } } });
  const place = parsed.choices[0].message.parsed;
  check(place && ['Oslo', 'Rome'].includes(place.city) && Number.isInteger(place.days),
        'chat.completions.parse: a json_schema reply parsed into an object of the schema', parsed.choices[0].message);

  // Tools: a forced call of a strict function; parse() gives its arguments parsed, the stream
  // helper the same call put together from the deltas.
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather now', parameters: schema,
                                                 strict: true } }];
  const toolParams = { model, messages: [{ role: 'user', content: 'Weather in Oslo?' }], tools, temperature: 0,
                       max_tokens: 60, tool_choice: { type: 'function', function: { name: 'get_weather' } } };
  const called = await client.chat.completions.parse(toolParams);
  const call = called.choices[0].message.tool_calls?.[0];
  check(call?.type === 'function' && call.function.name === 'get_weather' &&
            ['Oslo', 'Rome'].includes(call.function.parsed_arguments?.city),
        'chat.completions.parse with a strict tool: the call, its arguments parsed', called.choices[0].message);
  const streamedCall = await client.chat.completions.stream(toolParams).finalChatCompletion();
  check(isDeepStrictEqual(withoutIds(streamedCall.choices[0].message.tool_calls),
                          withoutIds(called.choices[0].message.tool_calls)),
        'chat.completions.stream with a tool: the call put together from the deltas is the whole reply\'s',
        { streamed: streamedCall.choices[0].message.tool_calls, whole: called.choices[0].message.tool_calls });

  // Completions, whole and streamed (an async iterator of chunks).
  const completion = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8,
                                                       temperature: 0, ignore_eos: true, logprobs: 1 });
  let completionText = '';
  for await (const chunk of await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 8,
                                                              temperature: 0, ignore_eos: true, stream: true }))
    completionText += chunk.choices[0]?.text ?? '';
  check(completion.object === 'text_completion' && completion.choices[0].logprobs.tokens.length === 8 &&
            completionText === completion.choices[0].text,
        'completions.create: the streamed chunks add up to the whole completion', { completion, completionText });

  // Embeddings: the SDK asks for base64 and decodes it; that must be the floats asked for as such.
  const input = ['The sky is blue.', 'Keys and values'];
  const decoded = await client.embeddings.create({ model, input });
  const floats = await client.embeddings.create({ model, input, encoding_format: 'float' });
  check(decoded.data.length === 2 && decoded.data.every((d, i) => d.index === i && d.embedding.length > 0 &&
            d.embedding.length === floats.data[i].embedding.length &&
            d.embedding.every((x, j) => Math.fround(floats.data[i].embedding[j]) === x)),
        "embeddings.create: the base64 the SDK asks for decodes to the float embeddings, exactly",
        { base64: decoded.data.map((d) => d.embedding.length), float: floats.data.map((d) => d.embedding.length) });

  // The Responses API: output_text is the chat endpoint's greedy reply; the stream helper's final
  // response is the whole one; a stored response is read back, its input items paged, continued
  // and deleted.
  const responseParams = { model, instructions: 'Be brief.', input: 'Why is the sky blue?', temperature: 0,
                           max_output_tokens: 12, ignore_eos: true };
  const response = await client.responses.create(responseParams);
  const chatText = (await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 12,
                                                           ignore_eos: true })).choices[0].message.content;
  check(response.object === 'response' && response.status === 'incomplete' && response.output_text === chatText,
        "responses.create: output_text is the chat endpoint's reply (incomplete at max_output_tokens)",
        { response: response.output_text, chat: chatText, status: response.status });
  const responseStream = client.responses.stream(responseParams);
  let responseDeltas = '';
  responseStream.on('response.output_text.delta', (event) => { responseDeltas += event.delta; });
  const streamedResponse = await responseStream.finalResponse();
  check(responseDeltas === chatText &&
            isDeepStrictEqual(withoutIds(streamedResponse.output), withoutIds(response.output)) &&
            isDeepStrictEqual(withoutIds(streamedResponse.usage), withoutIds(response.usage)),
        "responses.stream: the deltas and the final response are the whole response's",
        { deltas: responseDeltas, streamed: streamedResponse.output, whole: response.output });
  const read = await client.responses.retrieve(response.id);
  check(isDeepStrictEqual(read.output, response.output) && read.id === response.id,
        'responses.retrieve: the stored response as it was returned', read);
  const pages = [];
  for await (const item of client.responses.inputItems.list(response.id, { limit: 1 })) pages.push(item);
  check(pages.length === 1 && pages[0].type === 'message' && pages[0].role === 'user',
        'responses.inputItems.list: its one input item, through the SDK\'s pager', pages);
  const next = await client.responses.create({ model, previous_response_id: response.id, input: 'Thanks.',
                                               max_output_tokens: 2 });
  check(next.previous_response_id === response.id && next.usage.input_tokens > response.usage.input_tokens,
        'responses.create with previous_response_id: the stored conversation comes first', next.usage);
  const deleted = await client.responses.delete(response.id).then(() => true, (e) => e);
  const gone = await rejection(client.responses.retrieve(response.id));
  check(deleted === true && gone instanceof OpenAI.NotFoundError,
        'responses.delete, then retrieve: NotFoundError', { deleted: String(deleted), gone: String(gone) });

  // Errors: the SDK's class for each status.
  const wrongKey = await rejection(
      new OpenAI({ baseURL: `http://127.0.0.1:${server.port}/v1`, apiKey: 'wrong', maxRetries: 0 }).models.list());
  check(wrongKey instanceof OpenAI.AuthenticationError, 'a wrong API key: AuthenticationError (401)', String(wrongKey));
  const otherModel = await rejection(client.chat.completions.create({ ...params, model: 'gpt-4o' }));
  check(otherModel instanceof OpenAI.NotFoundError && otherModel.code === 'model_not_found',
        'another model: NotFoundError (404, model_not_found)', String(otherModel));
  const bad = await rejection(client.chat.completions.create({ ...params, temperature: -1 }));
  check(bad instanceof OpenAI.BadRequestError && /temperature/.test(bad.message),
        'temperature -1: BadRequestError naming it', String(bad));
  const after = await client.chat.completions.create({ ...params, max_tokens: 2 });
  check(after.usage.completion_tokens === 2, 'the server serves on after the refusals', after.usage);
} catch (e) {
  check(false, 'no exception escapes the checks', e.stack ?? String(e));
} finally {
  server.stop();
}
finish();
