// The admin page: signs in with an organization admin token or an API key (kept in this
// tab's sessionStorage), then shows the server's live figures from GET
// /api/websocket/health (every 2 s), the channels of a user from
// GET /api/websocket/channels/list (paged here, 25 a page) and the audit log from
// GET /api/websocket/audit with its filters. Every value from the server is put in the
// page as text, never as HTML. No dependencies, no build step.

const HEALTH_EVERY_MS = 2000;
const LISTS_EVERY_MS = 10000;
const PAGE_SIZE = 25;
const KEY = 'ringbearer.admin.credential';

const $ = (id) => document.getElementById(id);
let credential = sessionStorage.getItem(KEY);
let timers = [];
let channels = [];
let chPage = 0;

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

async function refreshHealth() {
  try {
    const h = await api('/api/websocket/health');
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
      li.textContent = `${a.level}: ${a.message}`;
      ul.append(li);
    }
    if (!ul.children.length) {
      const li = document.createElement('li');
      li.className = 'muted';
      li.textContent = 'none';
      ul.append(li);
    }
    text('updated', `updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    if (e.message !== 'unauthorized') {
      $('status').dataset.status = 'error';
      text('status', 'unreachable');
      text('updated', e.message);
    }
  }
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
  const pages = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
  chPage = Math.min(chPage, pages - 1);
  const rows = $('ch-rows');
  rows.replaceChildren();
  for (const c of shown.slice(chPage * PAGE_SIZE, (chPage + 1) * PAGE_SIZE)) {
    const tr = document.createElement('tr');
    tr.dataset.channel = c.name;
    cell(tr, c.name);
    cell(tr, c.type ?? '');
    cell(tr, c.active_users ?? 0);
    cell(tr, c.unread_count ?? 0);
    cell(tr, fmtTime(c.last_activity));
    rows.append(tr);
  }
  text('ch-count', `(${shown.length})`);
  text('ch-page', `page ${chPage + 1} of ${pages}`);
  $('ch-prev').disabled = chPage === 0;
  $('ch-next').disabled = chPage >= pages - 1;
}

async function refreshChannels() {
  const user = $('ch-user').value.trim();
  try {
    const d = await api('/api/websocket/channels/list' + (user ? `?user_id=${encodeURIComponent(user)}` : ''));
    channels = d.channels ?? [];
    text('ch-error', '');
    renderChannels();
  } catch (e) {
    if (e.message !== 'unauthorized') text('ch-error', e.message);
  }
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

function start() {
  $('login').hidden = true;
  $('dash').hidden = false;
  $('logout').hidden = false;
  refreshHealth();
  refreshChannels();
  refreshAudit();
  timers = [
    setInterval(refreshHealth, HEALTH_EVERY_MS),
    setInterval(() => { refreshChannels(); refreshAudit(); }, LISTS_EVERY_MS),
  ];
}

function signOut(message = '') {
  for (const t of timers) clearInterval(t);
  timers = [];
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
$('ch-form').addEventListener('submit', (ev) => { ev.preventDefault(); chPage = 0; refreshChannels(); });
$('ch-filter').addEventListener('input', () => { chPage = 0; renderChannels(); });
$('ch-prev').addEventListener('click', () => { chPage -= 1; renderChannels(); });
$('ch-next').addEventListener('click', () => { chPage += 1; renderChannels(); });
$('audit-form').addEventListener('submit', (ev) => { ev.preventDefault(); refreshAudit(); });

if (credential) start();
