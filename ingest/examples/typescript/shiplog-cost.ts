/**
 * shiplog-cost: report the token usage of an OpenAI or Anthropic API call to shiplog.
 *
 * No dependencies (global `fetch`: Node 18+, Deno, Bun, browsers, edge runtimes); copy
 * this file into your project. `reportUsage` never throws and is bounded by a short
 * timeout: reporting a cost must never break, or noticeably slow, the call it measures.
 * It resolves to true when shiplog acknowledged the event.
 *
 *   import { reportUsage } from './shiplog-cost';
 *
 *   const resp = await openai.chat.completions.create({ model: 'gpt-4o-mini', messages });
 *   void reportUsage(resp, 'openai', { feature: 'support-summarize' });
 *
 *   const msg = await anthropic.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 1024, messages });
 *   void reportUsage(msg, 'anthropic', { feature: 'chat' });
 *
 * The usage object is sent as the provider returned it (`data.usage`); shiplog derives the
 * token columns from it and prices the record with its dated price table (docs/costs.md).
 * Pass `costUsd` only when you compute the cost yourself: it then wins.
 *
 * Configuration: `SHIPLOG_URL` (default http://127.0.0.1:7070), `SHIPLOG_TOKEN` (ingest
 * scope), `SHIPLOG_PROJECT`, `SHIPLOG_ENV`, `SHIPLOG_DEPLOYMENT_ID` (the deployment serving
 * this process: its spend and requests are then judged by rollback rules) from the
 * environment when there is one, or the options.
 *
 * `reportRequests(errors, requests)` reports the requests the app served in an interval
 * (say a minute) and how many failed, as a `check`: rollback rules judge error rates on
 * these counts and price each served request (`api_cost_per_request`).
 */

export interface ReportOptions {
  /** Model name; default: the response's `model`. */
  model?: string;
  /** Product feature that made the call. */
  feature?: string;
  /** Your own cost figure (USD); when absent shiplog prices the usage. */
  costUsd?: number;
  project?: string;
  env?: string;
  deploymentId?: string;
  /** Event id; default: the response's id (so a retried report deduplicates). */
  id?: string;
  url?: string;
  token?: string;
  source?: string;
  /** Milliseconds (default 2000). */
  timeoutMs?: number;
}

type Json = Record<string, unknown>;

function envVar(name: string): string | undefined {
  const g = globalThis as { process?: { env?: Record<string, string | undefined> } };
  return g.process?.env?.[name];
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The usage object, id and model of a response (SDK object or parsed JSON) or a usage. */
export function usageOf(responseOrUsage: unknown): { usage?: Json; id?: string; model?: string } {
  if (!isObject(responseOrUsage)) return {};
  if ('usage' in responseOrUsage) {
    const r = responseOrUsage;
    return {
      usage: isObject(r.usage) ? (JSON.parse(JSON.stringify(r.usage)) as Json) : undefined,
      id: typeof r.id === 'string' ? r.id : undefined,
      model: typeof r.model === 'string' ? r.model : undefined,
    };
  }
  return { usage: JSON.parse(JSON.stringify(responseOrUsage)) as Json };
}

/** Posts one `api_cost` event with the call's usage. Never throws. */
export async function reportUsage(
  responseOrUsage: unknown,
  provider: string,
  options: ReportOptions = {},
): Promise<boolean> {
  try {
    const { usage, id, model: respModel } = usageOf(responseOrUsage);
    const model = options.model ?? respModel;
    if (!model) {
      console.warn('shiplog-cost: no model given and none in the response; not reported');
      return false;
    }
    const data: Json = { provider, model, requests: 1 };
    if (usage) data.usage = usage;
    if (options.feature) data.feature = options.feature;
    if (typeof options.costUsd === 'number') data.cost_usd = options.costUsd;
    // The provider's response id makes a retried report deduplicate.
    return await send('api_cost', data, { ...options, id: options.id ?? id });
  } catch (e) {
    console.warn(`shiplog-cost: usage not reported: ${String(e)}`);
    return false;
  }
}

/** Posts one event of `kind` with `data`; what the options leave out comes from
 * SHIPLOG_PROJECT, SHIPLOG_ENV, SHIPLOG_DEPLOYMENT_ID, SHIPLOG_URL and SHIPLOG_TOKEN. True on a
 * 2xx (the event is durable in shiplog's log). */
async function send(kind: string, data: Json, options: ReportOptions): Promise<boolean> {
  const event: Json = {
    id: options.id ?? globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`,
    kind,
    source: options.source ?? 'app/typescript',
    project: options.project ?? envVar('SHIPLOG_PROJECT') ?? 'default',
    time: new Date().toISOString(),
    data,
  };
  const env = options.env ?? envVar('SHIPLOG_ENV');
  if (env) event.env = env;
  const deploymentId = options.deploymentId ?? envVar('SHIPLOG_DEPLOYMENT_ID');
  if (deploymentId) event.deployment_id = deploymentId;
  const base = (options.url ?? envVar('SHIPLOG_URL') ?? 'http://127.0.0.1:7070').replace(/\/+$/, '');
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  const token = options.token ?? envVar('SHIPLOG_TOKEN');
  if (token) headers.authorization = `Bearer ${token}`;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.timeoutMs ?? 2000);
  try {
    const resp = await fetch(`${base}/v1/events`, {
      method: 'POST',
      headers,
      body: JSON.stringify(event),
      signal: controller.signal,
    });
    if (!resp.ok) console.warn(`shiplog-cost: ${String(event.kind)} not reported: HTTP ${resp.status}`);
    return resp.ok;
  } finally {
    clearTimeout(timer);
  }
}

/** Posts one `check` event with the requests served in an interval and how many failed
 * (`errors`, `requests`; `value` = their ratio). Never throws. */
export async function reportRequests(
  errors: number,
  requests: number,
  options: ReportOptions & { name?: string } = {},
): Promise<boolean> {
  try {
    if (!Number.isInteger(errors) || !Number.isInteger(requests) || errors < 0 || errors > requests) {
      console.warn(`shiplog-cost: errors=${errors} requests=${requests}: need integers 0 <= errors <= requests; not reported`);
      return false;
    }
    const data: Json = { name: options.name ?? 'error_rate', errors, requests, unit: 'ratio' };
    if (requests > 0) data.value = errors / requests;
    return await send('check', data, options);
  } catch (e) {
    console.warn(`shiplog-cost: requests not reported: ${String(e)}`);
    return false;
  }
}
