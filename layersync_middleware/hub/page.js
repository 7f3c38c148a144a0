// The hub's page: renders what /api/hub/* computes (layersync_middleware/hub/platforms.py
// decides every verdict, rule and payload). Event bodies come from anyone holding the
// publishable key, so everything is written as text, never as HTML.
'use strict';

const VERDICTS = {
  paired: 'Paired', browser_only: 'Browser only', server_only: 'Server only',
  name_mismatch: 'Name mismatch', id_reused: 'ID reused', late_pair: 'Late pair',
};
const PAGE = 100;
const $ = (sel) => document.querySelector(sel);
const state = { focus: false, pages: 1, etag: null, lastGroup: null, lastDash: null, now: Date.now() / 1000, timer: null };

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'href' || k === 'title' || k === 'type' || k === 'tabindex') node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}
const td = (text, cls) => el('td', { class: cls, text: text === null || text === undefined ? '–' : String(text) });
const badge = (v) => el('span', { class: 'badge v-' + v, text: VERDICTS[v] || v });
const show = (value) => value === undefined ? '' : (typeof value === 'string' ? value : JSON.stringify(value));

function span(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  const s = Math.abs(seconds);
  const sign = seconds < 0 ? '−' : '';
  if (s < 1) return sign + Math.round(s * 1000) + ' ms';
  if (s < 120) return sign + s.toFixed(1) + ' s';
  if (s < 7200) return sign + (s / 60).toFixed(1) + ' min';
  return sign + (s / 3600).toFixed(1) + ' h';
}
const clock = (t) => t ? new Date(t * 1000).toLocaleTimeString() : '–';
const stamp = (t) => t ? new Date(t * 1000).toLocaleString() : '–';

function filters() {
  const q = new URLSearchParams({ live: '1' });
  const name = $('#f-name').value.trim();
  if (name) q.set('name', name);
  const since = $('#f-since').value;
  if (since) q.set('since', String(Math.floor(state.now - Number(since))));
  const unpaired = $('#f-unpaired').value;
  if (unpaired !== '') q.set('unpaired_after', unpaired);
  return q;
}

async function getJSON(url, headers) {
  const r = await fetch(url, { cache: 'no-store', headers: headers || {} });
  if (r.status === 304) return { notModified: true };
  if (!r.ok) throw new Error(r.status + ' ' + ((await r.json().catch(() => ({}))).error || r.statusText));
  return { doc: await r.json(), etag: r.headers.get('ETag') };
}

function storeNotice(store) {
  const p = $('#evicted');
  p.hidden = !store.evicted;
  if (store.evicted) {
    const cap = (store.max_bytes / 1048576).toFixed(store.max_bytes < 1048576 ? 2 : 0);
    p.textContent = `The store is capped at ${cap} MiB of events: the ${store.evicted.toLocaleString()} oldest ` +
      `events were evicted (last at ${clock(store.evicted_at)}). Groups may be missing a side that was evicted.`;
  }
}

// -- the list --------------------------------------------------------------------------------
async function refreshList() {
  const q = filters();
  const verdict = $('#f-verdict').value;
  if (verdict) q.set('verdict', verdict);
  q.set('limit', String(Math.min(PAGE * state.pages, 1000)));
  const { doc, etag, notModified } = await getJSON('/api/hub/groups?' + q, state.etag ? { 'If-None-Match': state.etag } : {});
  if (notModified) return;
  state.etag = etag;
  state.now = doc.now;
  storeNotice(doc.store);
  const counts = $('#counts');
  counts.replaceChildren();
  for (const [v, n] of Object.entries(doc.counts)) counts.append(badge(v), ' ', String(n), '  ');
  const body = $('#groups tbody');
  const focused = document.activeElement && document.activeElement.closest('#groups') ? document.activeElement.getAttribute('href') : null;
  const rows = doc.groups.map((g) => {
    const href = `#/group/${encodeURIComponent(g.site_id)}/${encodeURIComponent(g.event_id)}`;
    const tr = el('tr', { 'data-event-id': g.event_id, 'data-verdict': g.verdict });
    tr.append(el('td', { class: 'verdict' }, badge(g.verdict)), td(g.event_name),
      el('td', { class: 'mono' }, el('a', { href, text: g.event_id, title: g.rule })),
      td(g.browser, 'num'), td(g.server, 'num'), td(g.gap_s === null ? '–' : span(g.gap_s), 'num'),
      el('td', { class: g.stale ? 'stale' : '' , text: clock(g.first_received_at) + (g.stale ? ' · unpaired' : '') }));
    return tr;
  });
  body.replaceChildren(...rows);
  if (focused) { const a = body.querySelector(`a[href="${CSS.escape(focused)}"]`); if (a) a.focus(); }
  $('#more').hidden = !doc.truncated || state.pages * PAGE >= 1000;
  $('#shown').textContent = `${doc.groups.length} of ${doc.total} groups` + (doc.truncated ? ' (newest first)' : '');
  const paired = doc.counts.paired;
  $('#status').textContent = `${doc.total} groups, ${paired} paired, ${doc.store.events.toLocaleString()} events stored · live, ${clock(doc.now)}`;
}

// -- one group -------------------------------------------------------------------------------
async function refreshGroup(site, id) {
  const q = filters();
  q.set('site_id', site);
  q.set('event_id', id);
  if ($('#reveal').checked) q.set('reveal', '1');
  const { doc } = await getJSON('/api/hub/group?' + q);
  const text = JSON.stringify(doc);
  if (text === state.lastGroup) return;
  state.lastGroup = text;
  $('#group-title').textContent = `event_id ${doc.event_id}`;
  const v = $('#g-verdict');
  v.className = 'badge v-' + doc.verdict;
  v.textContent = doc.verdict_label;
  $('#g-rule').textContent = 'Why: ' + doc.rule + '.';
  $('#g-meta').textContent = 'Meta: ' + doc.meta + '.';
  $('#g-tiktok').textContent = 'TikTok: ' + doc.tiktok + '.';
  $('#g-warnings').replaceChildren(...doc.warnings.map((w) => el('li', { text: w })));

  const t0 = Math.min(...doc.timeline.map((t) => t.received_at));
  $('#g-timeline tbody').replaceChildren(...doc.timeline.map((t) => el('tr', { 'data-source': t.source },
    td(t.seq), td(t.source), td(t.event_name), td(stamp(t.received_at)), td('+' + span(t.received_at - t0), 'num'),
    td(t.event_time), td(span(t.lag_s), 'num'), td(t.queued_for_s === null ? '–' : span(t.queued_for_s), 'num'),
    td(t.attempts, 'num'), td(t.sdk), td(t.flags.join('; ') || 'ok', t.flags.length ? 'st-invalid' : 'st-present'))));

  const mk = doc.match_keys;
  $('#g-score').textContent = `· local coverage score ${mk.local_coverage_score} / 100 (${mk.basis} event)`;
  $('#g-score-note').textContent = mk.note + '. ' + Object.entries(mk.tiers).map(([t, c]) => `${t}: ${c.present}/${c.of}`).join(', ');
  $('#g-keys tbody').replaceChildren(...mk.rows.map((r) => {
    const side = (status, note, value) => el('td', { class: 'st-' + status },
      status, note ? el('div', { class: 'origin', text: note }) : '', value ? el('div', { class: 'mono', text: show(value) }) : '');
    const agree = r.agree === null ? td('–') : el('td', { class: r.agree ? 'agree-yes' : 'agree-no', text: (r.agree ? 'yes' : 'no') + (r.agree_note ? ': ' + r.agree_note : '') });
    return el('tr', { 'data-key': r.key }, el('td', { class: 'mono', text: r.key + ' ' }, el('span', { class: 'origin', text: r.label })),
      td(r.tier || '–'), td(r.hashing === 'never' ? 'never hashed' : r.hashing === 'required' ? 'SHA-256' : 'SHA-256 recommended'),
      side(r.browser, r.browser_note, r.values.browser), side(r.server, r.server_note, r.values.server), agree);
  }));

  $('#g-diff tbody').replaceChildren(...doc.diff.map((d) => el('tr', { 'data-field': d.field, class: d.state === 'differs' ? 'differs' : d.state === 'same' ? '' : 'only' },
    td(d.field, 'mono'), td(show(d.browser), 'mono'), td(d.browser_origin, 'origin browser-origin'),
    td(show(d.server), 'mono'), td(d.server_origin, 'origin server-origin'), td(d.state, 'state'))));

  $('#g-basis').textContent = `(built from the ${doc.preview_source} event; tokens are placeholders)`;
  $('#g-previews').replaceChildren(...Object.entries(doc.previews).map(([key, p]) => {
    const copy = el('button', { type: 'button', text: 'Copy as curl' });
    copy.addEventListener('click', () => copyText(p.curl, copy));
    return el('section', { 'data-platform': key, 'aria-label': p.platform },
      el('h4', { text: p.platform + (p.event_name ? ` · ${p.event_name}` : '') }), el('p', { class: 'origin', text: p.note }),
      el('pre', { class: 'body', text: JSON.stringify(p.body, null, 2) }), copy,
      el('details', {}, el('summary', { text: 'curl' }), el('pre', { class: 'curl', text: p.curl })));
  }));
  if (state.focus) { state.focus = false; $('#group-title').focus(); }
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch (e) {
    button.textContent = 'Copy failed: open "curl" below';
  }
  setTimeout(() => { button.textContent = 'Copy as curl'; }, 2000);
}

// -- the dashboard ---------------------------------------------------------------------------
async function refreshDashboard() {
  const { doc } = await getJSON('/api/hub/dashboard?' + filters());
  const text = JSON.stringify(doc);
  if (text === state.lastDash) return;
  state.lastDash = text;
  storeNotice(doc.store);
  const pct = (x) => x === null ? '–' : x.toFixed(1) + ' %';
  const card = (label, value, sub) => el('div', { class: 'card' }, el('b', { text: value }), label, sub ? el('div', { class: 'origin', text: sub }) : '');
  $('#d-cards').replaceChildren(
    card('event coverage', pct(doc.coverage), `${doc.covered} of ${doc.browser_events} browser events; goal ${doc.goal} %`),
    card('event_time → arrival', `${span(doc.freshness_s.p50)} / ${span(doc.freshness_s.p95)}`, 'p50 / p95'),
    card('events stored', doc.store.events.toLocaleString(), `${(doc.store.bytes / 1048576).toFixed(1)} of ${(doc.store.max_bytes / 1048576).toFixed(0)} MiB`));
  const counts = $('#d-counts');
  counts.replaceChildren('Groups by verdict: ');
  for (const [v, n] of Object.entries(doc.counts)) counts.append(badge(v), ' ', String(n), '  ');
  $('#d-names tbody').replaceChildren(...doc.names.map((n) => {
    const bar = el('div', { class: 'bar', title: `goal ${doc.goal} %` }, el('span'), el('i'));
    bar.firstChild.style.width = (n.coverage || 0) + '%';
    return el('tr', { 'data-name': n.event_name }, td(n.event_name), td(n.browser_events, 'num'), td(n.server_events, 'num'), td(n.covered, 'num'),
      el('td', {}, bar), td(pct(n.coverage), 'num ' + (n.meets_goal === false ? 'st-invalid' : n.meets_goal ? 'st-present' : '')),
      td(span(n.freshness_s.p50), 'num'), td(span(n.freshness_s.p95), 'num'));
  }));
  $('#d-keys tbody').replaceChildren(...Object.entries(doc.key_coverage).map(([k, c]) => el('tr', { 'data-key': k },
    td(k, 'mono'), td(c.tier || '–'), td(pct(c.browser), 'num'), td(pct(c.server), 'num'))));
  $('#d-defs').textContent = Object.entries(doc.definitions).map(([k, v]) => `${k}: ${v}`).join(' · ');
  $('#status').textContent = `dashboard · ${doc.store.events.toLocaleString()} events stored · live`;
  if (state.focus) { state.focus = false; $('#dash-title').focus(); }
}

// -- routing and the live loop -----------------------------------------------------------------
function route() {
  const hash = location.hash || '#/';
  const m = hash.match(/^#\/group\/([^/]+)\/(.+)$/);
  const view = m ? 'group' : hash === '#/dashboard' ? 'dashboard' : 'list';
  $('#list-view').hidden = view !== 'list';
  $('#group-view').hidden = view !== 'group';
  $('#dashboard-view').hidden = view !== 'dashboard';
  $('#nav-groups').setAttribute('aria-current', view === 'list' ? 'page' : 'false');
  $('#nav-dashboard').setAttribute('aria-current', view === 'dashboard' ? 'page' : 'false');
  return { view, site: m && decodeURIComponent(m[1]), id: m && decodeURIComponent(m[2]) };
}

async function tick() {
  clearTimeout(state.timer);
  const r = route();
  try {
    if (r.view === 'group') await refreshGroup(r.site, r.id);
    else if (r.view === 'dashboard') await refreshDashboard();
    else await refreshList();
  } catch (err) {
    $('#status').textContent = 'hub unreachable or refused: ' + err.message;
  }
  state.timer = setTimeout(tick, 1000);
}

function restart() {
  state.etag = null;
  state.lastGroup = null;
  state.lastDash = null;
  tick();
}

for (const [v, label] of Object.entries(VERDICTS)) $('#f-verdict').append(el('option', { value: v, text: label }));
window.addEventListener('hashchange', () => { state.pages = 1; state.focus = route().view !== 'list'; restart(); });
for (const id of ['#f-name', '#f-verdict', '#f-since', '#f-unpaired']) $(id).addEventListener('input', restart);
$('#filters').addEventListener('submit', (e) => { e.preventDefault(); restart(); });
$('#reveal').addEventListener('change', restart);
$('#more').addEventListener('click', () => { state.pages += 1; restart(); });
tick();
