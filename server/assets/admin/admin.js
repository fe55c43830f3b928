// The admin page: signs in with an organization admin token or an API key (kept in this
// tab's sessionStorage), then shows the server's live figures and the open channel's
// detail (subscribers with cursors and unread counts, presence, recent messages) as the
// server pushes them on one server-sent-events stream, GET /api/websocket/events
// (read with fetch, so the credential goes in the Authorization header, never in a URL;
// reopened with a growing pause when it drops), the channels of the viewer's organization
// from GET /api/websocket/channels/list?scope=organization (paged by the server, 25 a page)
// the parked (unacknowledged wedding-day) messages from GET /api/websocket/parked and the
// audit log from GET /api/websocket/audit with its filters. Every value from the
// server is put in the page as text, never as HTML. No dependencies, no build step.

const LISTS_EVERY_MS = 10000;
const STREAM_RETRY_MIN_MS = 500;
const STREAM_RETRY_MAX_MS = 15000;
const PAGE_SIZE = 25;
const PAYLOAD_SHOWN_MAX = 200;
const KEY = 'ringbearer.admin.credential';

const $ = (id) => document.getElementById(id);
let credential = sessionStorage.getItem(KEY);
let timers = [];
let channels = [];
let chTotal = 0;
let chPage = 0;
// The open channel detail: its name and its subscribers page.
let openChannel = null;
let subPage = 0;
// The live stream: aborting it ends the stream and its reconnects.
let stream = null;

async function api(path) {
  const r = await fetch(path, { headers: { authorization: `Bearer ${credential}` }, cache: 'no-store' });
  let body = null;
  try {
    body = await r.json();
  } catch {
    // not JSON
  }
  if (r.status === 401) {
    signOut(body?.error?.message || 'the credential was refused');
    throw new Error('unauthorized');
  }
  if (!r.ok || !body?.success) {
    const e = body?.error;
    throw new Error(e ? `${e.code}: ${e.message}` : `HTTP ${r.status}`);
  }
  return body.data;
}

function text(id, v) {
  $(id).textContent = v;
}

function fmtMs(v) {
  return `${Number(v).toFixed(2)} ms`;
}

function fmtUptime(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

function fmtTime(v) {
  if (v === null || v === undefined || v === '') return '–';
  const d = typeof v === 'number' ? new Date(v) : new Date(String(v));
  return Number.isNaN(d.getTime()) ? String(v) : d.toLocaleString();
}

function renderHealth(h) {
  const m = h.metrics;
  $('status').dataset.status = h.status;
  text('status', h.status);
  text('m-connections', m.active_connections);
  text('m-channels', m.total_channels);
  text('m-rate', m.messages_per_second);
  text('m-avg', fmtMs(m.average_latency_ms));
  text('m-p99', fmtMs(m.p99_latency_ms));
  text('m-score', m.system_health_score);
  text('m-messages', m.total_messages);
  text('m-deliveries', m.total_deliveries);
  text('m-wedding-day', m.wedding_day_mode ? 'ON' : 'off');
  text('m-saturday', m.saturday_mode ? 'ON' : 'off');
  text('m-weddings', h.wedding_analytics?.active_weddings_today ?? '–');
  text('m-uptime', fmtUptime(m.uptime_seconds));
  const s = h.wedding_analytics?.supplier_activity;
  if (s) text('suppliers', `Suppliers connected — photographers ${s.photographers}, venues ${s.venues}, catering ${s.catering}, others ${s.others}`);
  const ul = $('alerts');
  ul.replaceChildren();
  for (const a of h.alerts ?? []) {
    const li = document.createElement('li');
    li.className = a.level;
    // Wedding-day watchdog alerts carry a kind (watchdog_absent, battery_low).
    li.textContent = a.kind ? `${a.level} [${a.kind}]: ${a.message}` : `${a.level}: ${a.message}`;
    ul.append(li);
  }
  if (!ul.children.length) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'none';
    ul.append(li);
  }
  text('updated', `live, updated ${new Date().toLocaleTimeString()}`);
}

function streamLost(message) {
  $('status').dataset.status = 'error';
  text('status', 'unreachable');
  text('updated', `${message}; reconnecting…`);
}

// One `event:`/`data:` block of a text/event-stream; null for comments and keep-alives.
function parseEvent(block) {
  let event = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  if (!data.length) return null;
  try {
    return { event, data: JSON.parse(data.join('\n')) };
  } catch {
    return null;
  }
}

function onEvent(ev, name) {
  if (ev.event === 'health') {
    renderHealth(ev.data);
  } else if (ev.event === 'detail' && openChannel === name) {
    const d = ev.data;
    const last = Math.max(0, Math.ceil((d.members ?? 0) / PAGE_SIZE) - 1);
    if (subPage > last) {
      subPage = last;
      restartStream();
      return;
    }
    text('d-error', '');
    renderDetail(d);
  } else if (ev.event === 'error' && openChannel === name) {
    const e = ev.data?.error;
    text('d-error', e ? `${e.code}: ${e.message}` : 'refused');
  }
}

const pause = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

// Reads GET /api/websocket/events (with the open channel's detail, if any) until it is
// aborted, reopening it when it drops: 0.5 s, then doubling up to 15 s (with jitter),
// back to 0.5 s once an event arrives. A refused detail (one `error` event) is shown and
// the stream goes on with the figures alone.
async function runStream(ctl) {
  const name = openChannel;
  let q = '';
  if (name) {
    q = `?${new URLSearchParams({ channel_name: name, offset: String(subPage * PAGE_SIZE), limit: String(PAGE_SIZE) })}`;
  }
  let delay = STREAM_RETRY_MIN_MS;
  while (!ctl.signal.aborted) {
    try {
      const r = await fetch(`/api/websocket/events${q}`, {
        headers: { authorization: `Bearer ${credential}`, accept: 'text/event-stream' },
        cache: 'no-store',
        signal: ctl.signal,
      });
      if (!r.ok) {
        let body = null;
        try {
          body = await r.json();
        } catch {
          // not JSON
        }
        if (r.status === 401) {
          signOut(body?.error?.message || 'the credential was refused');
          return;
        }
        const e = body?.error;
        throw new Error(e ? `${e.code}: ${e.message}` : `HTTP ${r.status}`);
      }
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      let refused = false;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = parseEvent(buf.slice(0, i));
          buf = buf.slice(i + 2);
          if (!ev || ctl.signal.aborted) continue;
          delay = STREAM_RETRY_MIN_MS;
          if (ev.event === 'error') {
            q = '';
            refused = true;
          }
          onEvent(ev, name);
        }
      }
      if (ctl.signal.aborted) return;
      if (refused) continue; // the figures alone, at once
      streamLost('the live stream ended');
    } catch (e) {
      if (ctl.signal.aborted) return;
      streamLost(e.message);
    }
    await pause(delay / 2 + Math.random() * (delay / 2), ctl.signal);
    delay = Math.min(delay * 2, STREAM_RETRY_MAX_MS);
  }
}

function stopStream() {
  if (stream) stream.abort();
  stream = null;
}

function restartStream() {
  stopStream();
  if (!credential) return;
  stream = new AbortController();
  runStream(stream);
}

function cell(tr, v, cls) {
  const td = document.createElement('td');
  td.textContent = v;
  if (cls) td.className = cls;
  tr.append(td);
}

function renderChannels() {
  const f = $('ch-filter').value.trim().toLowerCase();
  const shown = f ? channels.filter((c) => String(c.name).toLowerCase().includes(f)) : channels;
  const pages = Math.max(1, Math.ceil(chTotal / PAGE_SIZE));
  const rows = $('ch-rows');
  rows.replaceChildren();
  for (const c of shown) {
    const tr = document.createElement('tr');
    tr.dataset.channel = c.name;
    tr.tabIndex = 0;
    if (openChannel === c.name) tr.className = 'selected';
    cell(tr, c.name);
    cell(tr, c.type ?? '');
    cell(tr, c.wedding_id ?? '–');
    cell(tr, c.members ?? 0);
    cell(tr, c.active_users ?? 0);
    cell(tr, fmtTime(c.last_activity));
    rows.append(tr);
  }
  text('ch-count', `(${chTotal})`);
  text('ch-page', `page ${chPage + 1} of ${pages}`);
  $('ch-prev').disabled = chPage === 0;
  $('ch-next').disabled = chPage >= pages - 1;
}

async function refreshChannels() {
  const q = new URLSearchParams({ scope: 'organization', offset: String(chPage * PAGE_SIZE), limit: String(PAGE_SIZE) });
  try {
    const d = await api(`/api/websocket/channels/list?${q}`);
    channels = d.channels ?? [];
    chTotal = d.total ?? channels.length;
    const last = Math.max(0, Math.ceil(chTotal / PAGE_SIZE) - 1);
    if (chPage > last) {
      chPage = last;
      return refreshChannels();
    }
    text('ch-error', '');
    renderChannels();
  } catch (e) {
    if (e.message !== 'unauthorized') text('ch-error', e.message);
  }
}

function row(tbody, values, classes = []) {
  const tr = document.createElement('tr');
  values.forEach((v, i) => cell(tr, v ?? '', classes[i]));
  tbody.append(tr);
  return tr;
}

function metaField(meta, k) {
  const v = meta && typeof meta === 'object' ? meta[k] : undefined;
  if (v === undefined || v === null) return '–';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

function shortJson(v) {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s.length > PAYLOAD_SHOWN_MAX ? `${s.slice(0, PAYLOAD_SHOWN_MAX)}…` : s;
}

function renderDetail(d) {
  text('d-name', d.name);
  text('d-id', d.channel_id);
  text('d-type', d.type);
  text('d-wedding', d.wedding_id ?? '–');
  text('d-created', fmtTime(d.created_at));
  text('d-last', d.last_id);
  text('d-durable', d.durable_id);
  text('d-members', d.members);
  text('d-active', d.active_users);
  text('d-online', d.online_connections);

  const subs = $('d-subs');
  subs.replaceChildren();
  for (const s of d.subscribers ?? []) {
    const on = s.online_connections > 0;
    const tr = row(subs, [s.org, s.user_id, on ? 'online' : 'offline', s.online_connections, s.cursor, s.unread],
      [undefined, undefined, on ? 'on' : 'off']);
    tr.dataset.user = `${s.org}/${s.user_id}`;
  }
  if (!subs.children.length) row(subs, ['no subscribers'], ['muted']);
  const pages = Math.max(1, Math.ceil((d.members ?? 0) / PAGE_SIZE));
  text('d-page', `page ${subPage + 1} of ${pages}`);
  $('d-prev').disabled = subPage === 0;
  $('d-next').disabled = subPage >= pages - 1;

  const pres = $('d-presence');
  pres.replaceChildren();
  for (const p of d.presence ?? []) {
    const tr = row(pres, [p.user_id, p.org, p.role, metaField(p.meta, 'activity'), metaField(p.meta, 'location'), p.connection_id]);
    tr.dataset.user = `${p.org}/${p.user_id}`;
  }
  if (!pres.children.length) row(pres, ['nobody online'], ['muted']);
  const shown = (d.presence ?? []).length;
  text('d-presence-count', shown < d.presence_total ? `(${shown} of ${d.presence_total})` : `(${d.presence_total})`);

  const msgs = $('d-messages');
  msgs.replaceChildren();
  for (const m of d.recent_messages ?? []) {
    const tr = row(msgs, [m.id, fmtTime(m.ts), `${m.sender?.org}/${m.sender?.user_id}`, m.event ? `${m.type} ${m.event}` : m.type, shortJson(m.payload)],
      [undefined, undefined, undefined, undefined, 'payload']);
    tr.dataset.id = m.id;
  }
  if (!msgs.children.length) row(msgs, ['no messages'], ['muted']);
  text('d-updated', `updated ${new Date().toLocaleTimeString()}`);
}

function openDetail(name) {
  closeDetail();
  openChannel = name;
  subPage = 0;
  text('d-name', name);
  for (const id of ['d-subs', 'd-presence', 'd-messages']) $(id).replaceChildren();
  $('detail').hidden = false;
  $('detail').parentElement.classList.add('open');
  renderChannels();
  restartStream();
}

function closeDetail() {
  openChannel = null;
  $('detail').hidden = true;
  $('detail').parentElement.classList.remove('open');
  text('d-error', '');
}

async function refreshAudit() {
  const q = new URLSearchParams();
  const add = (k, v) => v && q.set(k, v);
  add('channel', $('a-channel').value.trim());
  add('user_id', $('a-user').value.trim());
  const ms = (id) => ($(id).value ? String(new Date($(id).value).getTime()) : '');
  add('from', ms('a-from'));
  add('to', ms('a-to'));
  add('limit', $('a-limit').value.trim());
  try {
    const d = await api(`/api/websocket/audit?${q}`);
    const rows = $('audit-rows');
    rows.replaceChildren();
    for (const r of d.records ?? []) {
      const tr = document.createElement('tr');
      tr.dataset.action = r.action;
      cell(tr, fmtTime(r.at_ms));
      cell(tr, r.actor_user_id);
      cell(tr, r.action);
      cell(tr, r.channel ?? '');
      cell(tr, typeof r.detail === 'string' ? r.detail : JSON.stringify(r.detail ?? ''), 'detail');
      rows.append(tr);
    }
    text('audit-error', '');
  } catch (e) {
    if (e.message !== 'unauthorized') text('audit-error', e.message);
  }
}

async function refreshParked() {
  const q = new URLSearchParams();
  const add = (k, v) => v && q.set(k, v);
  add('wedding_id', $('p-wedding').value.trim());
  add('channel', $('p-channel').value.trim());
  if ($('p-open').checked) q.set('open', 'true');
  add('limit', $('p-limit').value.trim());
  try {
    const d = await api(`/api/websocket/parked?${q}`);
    const rows = $('parked-rows');
    rows.replaceChildren();
    for (const r of d.entries ?? []) {
      const tr = document.createElement('tr');
      cell(tr, fmtTime(r.parked_at_ms));
      cell(tr, r.channel);
      cell(tr, r.message_id);
      cell(tr, r.priority);
      cell(tr, r.type);
      cell(tr, `${r.user_org}/${r.user_id}`);
      cell(tr, r.acked_at_ms == null ? 'not yet' : fmtTime(r.acked_at_ms));
      rows.append(tr);
    }
    text('parked-error', '');
  } catch (e) {
    if (e.message !== 'unauthorized') text('parked-error', e.message);
  }
}

function start() {
  $('login').hidden = true;
  $('dash').hidden = false;
  $('logout').hidden = false;
  restartStream();
  refreshChannels();
  refreshAudit();
  refreshParked();
  timers = [setInterval(() => { refreshChannels(); refreshAudit(); refreshParked(); }, LISTS_EVERY_MS)];
}

function signOut(message = '') {
  for (const t of timers) clearInterval(t);
  timers = [];
  stopStream();
  closeDetail();
  credential = null;
  sessionStorage.removeItem(KEY);
  $('dash').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  $('status').dataset.status = 'unknown';
  text('status', 'not signed in');
  text('login-error', message);
}

$('login').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  credential = $('credential').value.trim();
  $('credential').value = '';
  try {
    // The audit log answers admins and API keys only: the page is theirs.
    await api('/api/websocket/audit?limit=1');
  } catch (e) {
    if (e.message !== 'unauthorized') signOut(e.message);
    return;
  }
  sessionStorage.setItem(KEY, credential);
  text('login-error', '');
  start();
});
$('logout').addEventListener('click', () => signOut());
$('ch-form').addEventListener('submit', (ev) => { ev.preventDefault(); refreshChannels(); });
$('ch-filter').addEventListener('input', () => renderChannels());
$('ch-prev').addEventListener('click', () => { chPage -= 1; refreshChannels(); });
$('ch-next').addEventListener('click', () => { chPage += 1; refreshChannels(); });
const chosen = (ev) => ev.target.closest('#ch-rows tr[data-channel]');
$('ch-rows').addEventListener('click', (ev) => { const tr = chosen(ev); if (tr) openDetail(tr.dataset.channel); });
$('ch-rows').addEventListener('keydown', (ev) => {
  const tr = chosen(ev);
  if (tr && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); openDetail(tr.dataset.channel); }
});
$('d-close').addEventListener('click', () => { closeDetail(); renderChannels(); restartStream(); });
$('d-prev').addEventListener('click', () => { subPage -= 1; restartStream(); });
$('d-next').addEventListener('click', () => { subPage += 1; restartStream(); });
$('audit-form').addEventListener('submit', (ev) => { ev.preventDefault(); refreshAudit(); });
$('parked-form').addEventListener('submit', (ev) => { ev.preventDefault(); refreshParked(); });

if (credential) start();
