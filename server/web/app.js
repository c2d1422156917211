// wsreactor demo page: an echo panel, a live panel fed by the server's /stats push, and a chat
// panel in a room.
// Plain browser JavaScript, no build step, no dependencies.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
  const ECHO_URL = `${wsBase}/echo`;
  const STATS_URL = `${wsBase}/stats`;
  const HISTORY = 60; // samples kept for the charts (one a second by default)
  const LOG_LIMIT = 60; // entries kept in the message log
  const BURST = 1000;

  // ---- formatting ------------------------------------------------------------------------

  const fmtCount = (n) => {
    if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
    if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
    if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
    return Math.round(n).toLocaleString('en');
  };
  const fmtBytes = (n) => {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? `${Math.round(n)} B` : `${n.toFixed(n >= 100 ? 0 : 1)} ${units[i]}`;
  };
  const fmtUptime = (ms) => {
    const s = Math.floor(ms / 1000);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (v) => String(v).padStart(2, '0');
    if (h > 0) return `${h}h ${pad(m)}m ${pad(s % 60)}s`;
    if (m > 0) return `${m}m ${pad(s % 60)}s`;
    return `${s}s`;
  };
  const fmtMs = (ms) => (ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(1)} ms`);
  const hex = (bytes, max) => {
    const shown = Array.from(bytes.slice(0, max), (b) => b.toString(16).padStart(2, '0'));
    return shown.join(' ') + (bytes.length > max ? ' …' : '');
  };

  // ---- a WebSocket that reconnects with backoff -------------------------------------------

  /** Backoff before reconnect attempt n (0-based): 0.5 s doubling to 10 s, with jitter. */
  const backoff = (n) => {
    const ceiling = Math.min(10000, 500 * 2 ** n);
    return ceiling / 2 + Math.random() * (ceiling / 2);
  };

  /** Shows one socket's state in a pill (`connecting`/`open`/`closed`) and a detail line. */
  const stateView = (pillId) => (state, detail) => {
    const pill = $(pillId);
    pill.textContent = state;
    pill.dataset.state = state;
    $(`${pillId}-detail`).textContent = detail;
  };

  function reconnecting(url, { onOpen, onMessage, onClose, show }) {
    let ws = null;
    let attempt = 0;
    let countdown = null;

    const connect = () => {
      show('connecting', attempt > 0 ? `attempt ${attempt + 1}` : '');
      ws = new WebSocket(url);
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => {
        attempt = 0;
        show('open', ws.protocol ? `subprotocol ${ws.protocol}` : '');
        onOpen?.();
      };
      ws.onmessage = (event) => onMessage(event.data);
      ws.onclose = (event) => {
        onClose?.();
        const why = `code ${event.code}${event.reason ? ` “${event.reason}”` : ''}`;
        const due = performance.now() + backoff(attempt);
        attempt += 1;
        const tick = () => {
          const left = Math.max(0, due - performance.now());
          show('closed', `${why} · reconnecting in ${(left / 1000).toFixed(1)} s`);
          if (left <= 0) {
            clearInterval(countdown);
            countdown = null;
            connect();
          }
        };
        countdown = setInterval(tick, 100);
        tick();
      };
    };
    connect();
    return {
      isOpen: () => ws !== null && ws.readyState === WebSocket.OPEN,
      send: (data) => {
        if (ws === null || ws.readyState !== WebSocket.OPEN) return false;
        ws.send(data);
        return true;
      },
    };
  }

  // ---- echo panel --------------------------------------------------------------------------

  const log = $('log');
  const encoder = new TextEncoder();
  const strictDecoder = new TextDecoder('utf-8', { fatal: true });
  /** Sent messages waiting for their echo, oldest first (the server answers in order). */
  let pending = [];
  let burst = null;

  function addLog(className, kind, cells) {
    const item = document.createElement('li');
    item.className = className;
    if (kind) item.dataset.kind = kind;
    for (const [cls, text] of cells) {
      const span = document.createElement('span');
      span.className = cls;
      span.textContent = text;
      item.append(span);
    }
    log.prepend(item);
    while (log.children.length > LOG_LIMIT) log.lastElementChild.remove();
    return item;
  }
  const note = (text) => addLog('note', null, [['dir', '·'], ['body', text]]);

  const describe = (data) => {
    if (typeof data === 'string') return data;
    const bytes = new Uint8Array(data);
    let text = '';
    try {
      text = ` “${strictDecoder.decode(bytes)}”`;
    } catch {
      text = '';
    }
    return `${bytes.length} B: ${hex(bytes, 12)}${text}`;
  };

  const sameBytes = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

  const echo = reconnecting(ECHO_URL, {
    show: stateView('state'),
    onOpen: () => setButtons(true),
    onClose: () => {
      setButtons(false);
      if (pending.length > 0) note(`${pending.length} message(s) lost with the connection`);
      pending = [];
      burst = null;
    },
    onMessage: (data) => {
      const now = performance.now();
      const sent = pending.shift();
      if (sent === undefined) {
        note(`unexpected message: ${describe(data)}`);
        return;
      }
      if (sent.burst) {
        burst.received += 1;
        if (burst.received === BURST) {
          const took = now - burst.started;
          burst.item.lastElementChild.textContent =
            `burst: ${BURST} echoes in ${fmtMs(took)} (${fmtCount((BURST * 1000) / took)} msg/s)`;
          burst.item.dataset.done = 'true';
          burst = null;
        }
        return;
      }
      const kind = typeof data === 'string' ? 'text' : 'binary';
      const same = kind === 'text' ? data === sent.payload : sameBytes(new Uint8Array(data), sent.payload);
      const item = addLog('reply', kind, [
        ['dir', '←'],
        ['kind', kind],
        ['body', describe(data)],
        ['rtt', same ? fmtMs(now - sent.at) : 'differs from what was sent'],
      ]);
      item.dataset.rttMs = (now - sent.at).toFixed(3);
    },
  });

  function setButtons(enabled) {
    for (const id of ['send-text', 'send-binary', 'send-burst']) $(id).disabled = !enabled;
  }
  setButtons(false);

  function send(kind) {
    const text = $('message').value;
    const payload = kind === 'text' ? text : encoder.encode(text);
    const at = performance.now();
    if (!echo.send(payload)) {
      note('not connected: message not sent');
      return;
    }
    pending.push({ payload, at, burst: false });
    addLog('sent', kind, [['dir', '→'], ['kind', kind], ['body', kind === 'text' ? text : describe(payload.buffer)], ['rtt', '']]);
  }

  $('echo-form').addEventListener('submit', (event) => {
    event.preventDefault();
    send('text');
  });
  $('send-binary').addEventListener('click', () => send('binary'));
  $('clear-log').addEventListener('click', () => log.replaceChildren());
  $('send-burst').addEventListener('click', () => {
    if (burst !== null || !echo.isOpen()) return;
    const item = note(`burst: sending ${BURST} text messages…`);
    item.classList.add('burst');
    burst = { started: performance.now(), received: 0, item };
    for (let i = 0; i < BURST; i += 1) {
      echo.send(`burst ${i}`);
      pending.push({ payload: null, at: burst.started, burst: true });
    }
  });

  // ---- live panel --------------------------------------------------------------------------

  const series = { msgsIn: [], msgsOut: [], bytesIn: [], bytesOut: [] };
  let updates = 0;
  let intervalMs = 1000; // announced by the server's hello

  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();

  /** The smallest 1, 2 or 5 times a power of ten that is at least `v`. */
  const niceCeiling = (v) => {
    const power = 10 ** Math.floor(Math.log10(v));
    for (const step of [1, 2, 5, 10]) if (step * power >= v) return step * power;
    return 10 * power;
  };
  /** The same in binary units, so byte axes read 0, 25 KiB, 50 KiB… */
  const niceBytes = (v) => {
    let unit = 1;
    while (v / unit >= 1000) unit *= 1024;
    return niceCeiling(v / unit) * unit;
  };

  /** Draws two series (newest on the right) on a canvas, hand-rolled. */
  function drawChart(canvas, a, b, { format, ceiling, minimum }) {
    const cssWidth = canvas.clientWidth;
    const cssHeight = Number(canvas.dataset.height || canvas.getAttribute('height'));
    canvas.dataset.height = cssHeight;
    canvas.style.height = `${cssHeight}px`;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(cssWidth * dpr);
    canvas.height = Math.round(cssHeight * dpr);
    const g = canvas.getContext('2d');
    g.scale(dpr, dpr);

    const left = 58;
    const right = 10;
    const top = 10;
    const bottom = 20;
    const w = cssWidth - left - right;
    const h = cssHeight - top - bottom;
    const max = ceiling(Math.max(minimum, ...a, ...b));
    // The time axis grows with the samples, from 10 pushes up to HISTORY, then scrolls.
    const span = Math.min(HISTORY, Math.max(10, a.length));
    const x = (i, n) => left + w - (n - 1 - i) * (w / (span - 1));
    const y = (v) => top + h - (v / max) * h;

    g.font = '11px system-ui, sans-serif';
    g.textBaseline = 'middle';
    g.lineWidth = 1;
    for (let step = 0; step <= 4; step += 1) {
      const v = (max * step) / 4;
      const yy = Math.round(y(v)) + 0.5;
      g.strokeStyle = step === 0 ? '#334155' : '#1e293b';
      g.beginPath();
      g.moveTo(left, yy);
      g.lineTo(left + w, yy);
      g.stroke();
      g.fillStyle = color('--faint');
      g.textAlign = 'right';
      g.fillText(format(v), left - 8, yy);
    }
    g.textAlign = 'left';
    g.textBaseline = 'alphabetic';
    g.fillText(`${Math.round(((span - 1) * intervalMs) / 1000)} s ago`, left, cssHeight - 4);
    g.textAlign = 'right';
    g.fillText('now', left + w, cssHeight - 4);

    if (a.length === 0) {
      g.textAlign = 'center';
      g.fillStyle = color('--muted');
      g.fillText('waiting for the first push…', left + w / 2, top + h / 2);
      return;
    }
    const line = (values, stroke, fill, dash) => {
      const n = values.length;
      g.beginPath();
      values.forEach((v, i) => (i === 0 ? g.moveTo(x(i, n), y(v)) : g.lineTo(x(i, n), y(v))));
      if (fill) {
        g.save();
        g.lineTo(x(n - 1, n), y(0));
        g.lineTo(x(0, n), y(0));
        g.closePath();
        const gradient = g.createLinearGradient(0, top, 0, top + h);
        gradient.addColorStop(0, fill);
        gradient.addColorStop(1, 'rgba(0,0,0,0)');
        g.fillStyle = gradient;
        g.fill();
        g.restore();
        g.beginPath();
        values.forEach((v, i) => (i === 0 ? g.moveTo(x(i, n), y(v)) : g.lineTo(x(i, n), y(v))));
      }
      g.strokeStyle = stroke;
      g.lineWidth = 2;
      g.lineJoin = 'round';
      g.setLineDash(dash);
      g.stroke();
      g.setLineDash([]);
      // The newest point, so a flat line still shows it is moving.
      g.fillStyle = stroke;
      g.beginPath();
      g.arc(x(n - 1, n), y(values[n - 1]), 3, 0, 2 * Math.PI);
      g.fill();
    };
    // In: a filled area; out: a dashed line on top, so an echo (in = out) shows both.
    line(a, color('--in'), 'rgba(56, 189, 248, 0.30)', []);
    line(b, color('--out'), null, [6, 4]);
  }

  function redraw() {
    drawChart($('chart-msgs'), series.msgsIn, series.msgsOut, { format: fmtCount, ceiling: niceCeiling, minimum: 5 });
    drawChart($('chart-bytes'), series.bytesIn, series.bytesOut, { format: fmtBytes, ceiling: niceBytes, minimum: 1024 });
  }

  const push = (list, v) => {
    list.push(v);
    if (list.length > HISTORY) list.shift();
  };

  function onStats(s) {
    $('open').textContent = fmtCount(s.open);
    $('msgs-in').textContent = fmtCount(s.rate.messages_in);
    $('msgs-out').textContent = fmtCount(s.rate.messages_out);
    $('bytes-in').textContent = fmtBytes(s.rate.bytes_in);
    $('bytes-out').textContent = fmtBytes(s.rate.bytes_out);
    $('uptime').textContent = fmtUptime(s.uptime_ms);
    $('total-msgs-in').textContent = s.total.messages_in.toLocaleString('en');
    $('total-msgs-out').textContent = s.total.messages_out.toLocaleString('en');
    $('total-bytes-in').textContent = fmtBytes(s.total.bytes_in);
    $('total-bytes-out').textContent = fmtBytes(s.total.bytes_out);
    $('total-opened').textContent = s.total.opened.toLocaleString('en');
    $('total-http').textContent = s.total.http_requests.toLocaleString('en');
    $('total-refused').textContent = s.total.refused.toLocaleString('en');
    $('total-errors').textContent = s.total.protocol_errors.toLocaleString('en');
    if (s.closes && s.refusals) {
      const n = (v) => v.toLocaleString('en');
      const c = s.closes;
      $('close-peer').textContent = n(c.peer);
      // The server's own closes: the application's, shutdown's, protocol failures', panics'.
      $('close-local').textContent = n(c.local + c.shutdown + c.protocol + c.panic);
      $('close-timeout').textContent = n(c.timeout);
      $('close-io').textContent = n(c.io);
      $('close-backlog').textContent = n(c.backlog);
      $('backpressure').textContent = n(s.total.backpressure_pauses);
      $('refusals').textContent = Object.entries(s.refusals).map(([k, v]) => `${k}: ${n(v)}`).join(' · ');
    }

    push(series.msgsIn, s.rate.messages_in);
    push(series.msgsOut, s.rate.messages_out);
    push(series.bytesIn, s.rate.bytes_in);
    push(series.bytesOut, s.rate.bytes_out);
    redraw();
    updates += 1;
    $('chart').dataset.updates = String(updates);
    $('chart-updates').textContent = updates.toLocaleString('en');
  }


  // ---- chat panel --------------------------------------------------------------------------
  // A WebSocket on /room/NAME is a member of room NAME; the server publishes every message a
  // member sends, unchanged, to every member (the sender too). The page sends each line as
  // {"type":"chat","from":NAME,"text":TEXT}; anything else it receives is shown as it is.
  // The member count is the room's entry in the stats push ("rooms", the 16 largest).

  const chatLog = $('chat-log');
  const chatView = stateView('chat-state');
  let chat = null; // { ws, room }
  let lastRooms = [];
  $('chat-nick').value = `guest-${Math.floor(Math.random() * 9000 + 1000)}`;

  function chatLine(from, text, mine) {
    const item = document.createElement('li');
    if (mine) item.className = 'mine';
    for (const [cls, value] of [['from', from], ['body', text], ['at', new Date().toLocaleTimeString('en-GB')]]) {
      const span = document.createElement('span');
      span.className = cls;
      span.textContent = value;
      item.append(span);
    }
    chatLog.append(item);
    while (chatLog.children.length > LOG_LIMIT) chatLog.firstElementChild.remove();
    chatLog.scrollTop = chatLog.scrollHeight;
  }

  function showMembers() {
    const el = $('chat-members');
    if (!chat) {
      el.textContent = '–';
      return;
    }
    const entry = lastRooms.find((r) => r.room === chat.room);
    // Not among the largest rooms listed: the count is not known from the push.
    el.textContent = entry ? entry.members.toLocaleString('en') : (lastRooms.length < 16 ? '…' : '?');
  }

  function setChatControls(joined) {
    $('chat-message').disabled = !joined;
    $('chat-send').disabled = !joined;
    $('chat-leave').disabled = !joined;
    $('chat-join-button').disabled = joined;
    $('chat-room').disabled = joined;
  }

  function leaveChat() {
    if (!chat) return;
    const { ws } = chat;
    chat = null;
    ws.onclose = null;
    ws.close(1000);
    chatView('closed', 'not joined');
    $('chat-state').textContent = 'not joined';
    setChatControls(false);
    showMembers();
  }

  $('chat-join').addEventListener('submit', (event) => {
    event.preventDefault();
    const room = $('chat-room').value.trim();
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(room)) return;
    leaveChat();
    const ws = new WebSocket(`${wsBase}/room/${room}`);
    chat = { ws, room };
    chatView('connecting', room);
    ws.onopen = () => {
      chatView('open', room);
      $('chat-state').textContent = `in ${room}`;
      setChatControls(true);
      chatLine('·', `joined room ${room}`, true);
      showMembers();
      $('chat-message').focus();
    };
    ws.onmessage = (event) => {
      const data = typeof event.data === 'string' ? event.data : '(binary message)';
      try {
        const m = JSON.parse(data);
        if (m && m.type === 'chat' && typeof m.text === 'string') {
          const from = String(m.from ?? '?');
          chatLine(from, m.text, from === $('chat-nick').value);
          return;
        }
      } catch {
        // not the page's JSON: shown as it is
      }
      chatLine('?', data, false);
    };
    ws.onclose = (event) => {
      if (!chat || chat.ws !== ws) return;
      chat = null;
      chatView('closed', `code ${event.code}${event.reason ? ` “${event.reason}”` : ''}`);
      setChatControls(false);
      showMembers();
    };
  });

  $('chat-leave').addEventListener('click', leaveChat);

  $('chat-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = $('chat-message');
    const text = input.value;
    if (!chat || text === '' || chat.ws.readyState !== WebSocket.OPEN) return;
    chat.ws.send(JSON.stringify({ type: 'chat', from: $('chat-nick').value, text }));
    input.value = '';
  });

  reconnecting(STATS_URL, {
    show: stateView('stats-state'),
    onMessage: (data) => {
      if (typeof data !== 'string') return;
      let message;
      try {
        message = JSON.parse(data);
      } catch {
        return; // the stats socket also echoes; nothing else is expected on it
      }
      if (message.type === 'hello') {
        if (message.interval_ms > 0) intervalMs = message.interval_ms;
        $('interval').textContent = message.interval_ms > 0 ? `${message.interval_ms} ms` : 'never (push off)';
      } else if (message.type === 'stats') {
        onStats(message);
        lastRooms = Array.isArray(message.rooms) ? message.rooms : [];
        showMembers();
      }
    },
  });

  // ---- page setup ----------------------------------------------------------------------------

  $('echo-url').textContent = '/echo';
  $('stats-url').textContent = '/stats';
  $('load-url').textContent = `${wsBase}/`;
  window.addEventListener('resize', redraw);
  redraw();
})();
