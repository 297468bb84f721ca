// The dashboard: plain JavaScript over the engine's own API, no build step.
// Every element is made from text (h() below), never from an HTML string, so a device named
// `<img onerror=...>` shows as text. The token stays in this tab's session storage.
"use strict";

(() => {
  const TOKEN_KEY = "tracker.token";
  const POLL_S = 5; // views without live data read again this long after their last read ended
  const BACKSTOP_S = 30; // views fed by the socket read again this often all the same
  const TRAIL = 20; // positions in a device's trail on the map
  const UNCLUSTERED_ZOOM = 15; // markers are clustered below this zoom
  const TRAIL_ZOOM = 12; // trails are drawn from this zoom in (a city), not over a whole fleet
  const LARGE_FLEET = 200; // devices beyond which the device list is redrawn less often
  const PAGE = 50; // tasks per page
  const main = document.getElementById("main");
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    user: null,
    devices: new Map(), // id -> device, kept current by the socket
    positions: new Map(), // device id -> newest position
    trails: new Map(), // device id -> [[lat, lon], ...]
    socket: null,
    socketUp: false,
    view: null, // {refresh, live, stop} of the view on screen
    poll: null,
  };

  // ---- building blocks -------------------------------------------------------------------------

  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "class") el.className = value;
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    return fill(el, ...children);
  }

  // Puts children (elements, text, nested lists of them; null and false left out) into el, replacing
  // what it held: text always becomes a text node.
  function fill(el, ...children) {
    el.replaceChildren();
    for (const child of children.flat(Infinity)) {
      if (child !== null && child !== undefined && child !== false) el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // One call of the API with the tab's token; `asFile`: the body as a Blob (a download), whatever its type.
  async function api(method, path, body, asFile = false) {
    const headers = { Authorization: `Bearer ${state.token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (response.status === 401 && path !== "/api/session") {
      signedOut("Your session has ended; sign in again.");
      throw new ApiError(401, "signed out");
    }
    const type = response.headers.get("content-type") || "";
    const file = asFile && response.status === 200;
    const data = response.status === 204 ? null : type.includes("json") && !file ? await response.json() : await response.blob();
    if (!response.ok) throw new ApiError(response.status, (data && data.error && data.error.message) || response.statusText);
    return { status: response.status, data, response };
  }
  const get = async (path) => (await api("GET", path)).data;

  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
  const ago = (iso) => {
    if (!iso) return "never";
    const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    return s < 90 ? `${Math.round(s)} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
  };
  const seconds = (s) => (s === null || s === undefined ? "—" : s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`);
  const json = (value) => JSON.stringify(value, null, 2);
  const query = (params) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      for (const one of [].concat(v)) if (one !== "" && one !== null && one !== undefined) q.append(k, one);
    }
    const text = q.toString();
    return text ? `?${text}` : "";
  };

  function table(caption, columns, rows, empty = "Nothing yet.") {
    if (!rows.length) return h("p", { class: "empty" }, empty);
    // In a region of its own that scrolls sideways on a narrow screen, reachable by keyboard.
    return h(
      "div",
      { class: "scroll", tabindex: 0, role: "region", "aria-label": caption },
      h(
        "table",
        {},
        h("caption", {}, caption),
        h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title)))),
        h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row)))))),
      ),
    );
  }

  function badge(text) {
    return h("span", { class: `badge ${String(text).replace(/[^a-z_]/gi, "")}` }, text);
  }

  function progressBar(progress) {
    if (!progress) return "";
    const percent = Math.max(0, Math.min(100, Number(progress.percent) || 0));
    return h(
      "span",
      { class: "progress" },
      h("progress", { max: 100, value: percent, "aria-label": `progress ${percent}%` }),
      ` ${percent}% ${progress.message || ""}`,
    );
  }

  function notice(text, kind = "error") {
    return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
  }

  // A form's fields as an object (empty fields left out); checkboxes as booleans.
  function fields(form) {
    const out = {};
    for (const el of form.elements) {
      if (!el.name) continue;
      if (el.type === "checkbox") out[el.name] = el.checked;
      else if (el.multiple) out[el.name] = [...el.selectedOptions].map((o) => o.value);
      else if (el.value !== "") out[el.name] = el.value;
    }
    return out;
  }

  function field(label, input) {
    return h("label", {}, h("span", {}, label), input);
  }

  // Runs an action from a button: disabled while it runs, its outcome shown beside it.
  async function act(button, outcome, action) {
    button.disabled = true;
    fill(outcome);
    try {
      const text = await action();
      if (text) outcome.append(notice(text, "ok"));
    } catch (error) {
      outcome.append(notice(error.message));
    } finally {
      button.disabled = false;
    }
  }

  // A file from the API (it needs the token, so not a plain link), saved under the name the server gives.
  // A format not made yet is exported first (202): asked again every second, for a minute, until it is.
  async function download(path, fallbackName) {
    let { status, data, response } = await api("GET", path, undefined, true);
    for (let tries = 0; status === 202 && tries < 60; tries += 1) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      ({ status, data, response } = await api("GET", path, undefined, true));
    }
    if (status === 202) return "Still being prepared; try again in a minute.";
    const given = /filename="([^"\\/]+)"/.exec(response.headers.get("content-disposition") || "");
    const url = URL.createObjectURL(data);
    const link = h("a", { href: url, download: given ? given[1] : fallbackName });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    return "";
  }

  // ---- sign-in ---------------------------------------------------------------------------------

  function signedOut(message) {
    if (!state.user && !state.token) return; // already signed out: the sign-in form stays as it is
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.user = null;
    leaveView();
    stopLive();
    showSignIn(message);
  }

  // Stops what the view on screen runs (its map, its timers) before another takes its place.
  function leaveView() {
    clearTimeout(state.poll);
    const view = state.view;
    state.view = null;
    if (view) {
      clearTimeout(view.timer);
      if (view.stop) view.stop();
    }
  }

  function showSignIn(message) {
    fill(document.getElementById("nav"));
    document.getElementById("who").textContent = "";
    document.getElementById("signout").hidden = true;
    const outcome = h("div", { class: "outcome" }, message ? notice(message, "info") : "");
    const form = h(
      "form",
      { class: "signin", "aria-labelledby": "signin-title" },
      h("h1", { id: "signin-title" }, "Sign in"),
      field("Email", h("input", { name: "email", type: "email", autocomplete: "username" })),
      field("Password", h("input", { name: "password", type: "password", autocomplete: "current-password" })),
      h("p", { class: "hint" }, "Or paste an API token: the one tracker-jobs up printed on its first start, or a new one from tracker-jobs token."),
      field("API token", h("input", { name: "token", type: "password", autocomplete: "off" })),
      h("button", { type: "submit" }, "Sign in"),
      outcome,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const given = fields(form);
      fill(outcome);
      try {
        if (given.token) state.token = given.token.trim();
        else {
          const response = await fetch("/api/session", {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ email: given.email || "", password: given.password || "" }),
          });
          const body = await response.json();
          if (!response.ok) throw new ApiError(response.status, body.error ? body.error.message : response.statusText);
          state.token = body.token;
        }
        await start();
      } catch (error) {
        state.token = null;
        outcome.append(notice(error.status === 401 ? "Wrong email, password or token." : error.message));
      }
    });
    fill(main, form);
    form.elements.email.focus();
  }

  async function signOut() {
    try {
      await api("DELETE", "/api/session");
    } catch (_) {
      // signed out here either way
    }
    signedOut("Signed out.");
  }

  // ---- navigation ------------------------------------------------------------------------------

  const VIEWS = {
    overview: { title: "Overview", admin: true, render: overview },
    tasks: { title: "Tasks", render: tasks },
    task: { title: "Task", hidden: true, render: task },
    workers: { title: "Workers", admin: true, render: workers },
    map: { title: "Devices", render: devicesMap },
    reports: { title: "Reports", render: reports },
    events: { title: "Events", render: events },
    commands: { title: "Commands", render: commands },
    cleanup: { title: "Cleanup", admin: true, render: cleanup },
  };

  function allowed(name) {
    const view = VIEWS[name];
    return view && (!view.admin || state.user.role === "admin");
  }

  function route() {
    const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
    const fallback = state.user.role === "admin" ? "overview" : "map";
    return allowed(name) ? { name, arg: decodeURIComponent(rest.join("/")) } : { name: fallback, arg: "" };
  }

  function showNav(current) {
    const links = Object.entries(VIEWS)
      .filter(([name, view]) => !view.hidden && allowed(name))
      .map(([name, view]) =>
        h("a", { href: `#/${name}`, "aria-current": name === current || (current === "task" && name === "tasks") ? "page" : null }, view.title),
      );
    fill(document.getElementById("nav"), ...links);
  }

  async function show() {
    if (!state.user) return;
    leaveView();
    const { name, arg } = route();
    showNav(name);
    const view = { refresh: null, live: null, stop: null };
    state.view = view;
    const container = h("section", { "aria-labelledby": "view-title" }, h("h1", { id: "view-title" }, VIEWS[name].title));
    fill(main, container);
    performance.mark(`view-start:${name}`);
    try {
      await VIEWS[name].render(container, arg, view);
      performance.mark(`view-ready:${name}`); // first data on screen (devtools and bench/dashboard.py read it)
    } catch (error) {
      console.error(error);
      if (error.status !== 401) container.append(notice(error.message || String(error)));
    }
    if (state.view === view) schedule(view);
  }

  // A view's reads never overlap (rq-dashboard's lesson: overlapping polls exhaust connections): one
  // asked for while another runs happens once, right after it.
  // `first`: the view's first read, whose failure the view shows (later ones are tried again later).
  async function reread(view, first = false) {
    if (view.reading) {
      view.again = true;
      return;
    }
    view.reading = true;
    view.readAt = Date.now();
    try {
      await view.refresh();
    } catch (error) {
      if (first) throw error;
      console.error(error); // the view shows what it can; the next round tries again
    } finally {
      view.reading = false;
    }
    if (view.again && state.view === view) {
      view.again = false;
      await reread(view);
    }
  }

  // News from the socket: read again after `ms`, however much news arrives meanwhile.
  function soon(view, ms) {
    if (view.timer || state.view !== view) return;
    view.timer = setTimeout(() => {
      view.timer = null;
      if (state.view === view) reread(view);
    }, ms);
  }

  // The timer: the next read starts POLL_S after the last one ended. Views fed by the socket
  // (liveOnly) read on it while the socket is down, and otherwise every BACKSTOP_S only, in case a
  // change was never announced (a message dropped, a record written by a process that died).
  function schedule(view) {
    if (!view.refresh) return;
    state.poll = setTimeout(async () => {
      if (state.view !== view || !state.user) return;
      const due = Date.now() - (view.readAt || 0) >= BACKSTOP_S * 1000;
      if (!view.liveOnly || !state.socketUp || due) await reread(view);
      if (state.view === view) schedule(view);
    }, POLL_S * 1000);
  }

  // ---- live updates (/api/socket) --------------------------------------------------------------

  function startLive() {
    let delay = 1000;
    const connect = () => {
      if (!state.token) return;
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const socket = new WebSocket(`${scheme}://${location.host}/api/socket?tasks=true&token=${encodeURIComponent(state.token)}`);
      state.socket = socket;
      socket.onopen = () => {
        if (state.socket !== socket) return socket.close();
        delay = 1000;
        state.socketUp = true;
        document.getElementById("live").textContent = "● live";
        // What changed while the socket was down was not announced: read the view again once.
        if (state.view && state.view.liveOnly) reread(state.view);
      };
      socket.onmessage = (message) => state.socket === socket && onLive(JSON.parse(message.data));
      socket.onclose = (event) => {
        if (state.socket !== socket) return; // an old socket, replaced or signed out
        state.socketUp = false;
        state.socket = null;
        if (event.code === 1008) return signedOut("Your access changed; sign in again.");
        document.getElementById("live").textContent = "○ reconnecting (polling meanwhile)";
        setTimeout(() => state.socket === null && state.user && connect(), delay);
        delay = Math.min(delay * 2, 30000); // backoff: a restarting server is not hammered
      };
    };
    connect();
  }

  function stopLive() {
    const socket = state.socket;
    state.socket = null;
    state.socketUp = false;
    if (socket) socket.close();
    state.devices.clear();
    state.positions.clear();
    state.trails.clear();
    document.getElementById("live").textContent = "";
  }

  function onLive(message) {
    for (const device of message.devices || []) state.devices.set(device.id, device);
    for (const position of message.positions || []) {
      state.positions.set(position.deviceId, position);
      const trail = state.trails.get(position.deviceId) || [];
      trail.push([position.latitude, position.longitude]);
      if (trail.length > TRAIL) trail.shift();
      state.trails.set(position.deviceId, trail);
    }
    if (state.view && state.view.live) state.view.live(message);
    if (message.positions && message.positions.length) {
      document.dispatchEvent(new CustomEvent("tracker:positions", { detail: message.positions }));
    }
  }

  // ---- views -----------------------------------------------------------------------------------

  async function overview(container, _arg, view) {
    const body = h("div", { class: "grid" });
    container.append(body);
    view.refresh = async () => {
      let read;
      try {
        read = await Promise.all([
        fetch("/health").then((r) => r.json()),
        get("/api/tasks/queues"),
        get("/api/tasks/workers"),
        get("/api/tasks/stats?window=1h"),
        get("/api/tasks/stats?window=24h"),
        get("/api/tasks/history?window=1h"),
        get("/api/tasks/history?window=24h"),
        ]);
      } catch (error) {
        // Say so rather than keep showing the last, perhaps healthy, picture.
        fill(body, notice(`Cannot read the engine's state: ${error.message}`));
        throw error;
      }
      const [health, queues, workersNow, hour, day, hourly, daily] = read;
      const alerts = health.systemAlerts || [];
      fill(body,
        h("div", { class: "card" }, h("h2", {}, "Health"), h("p", {}, badge(health.status), ` Redis ${health.redis.connected ? "up" : "down"}, database ${health.database.connected ? "up" : "down"}, ${health.workers} live worker${health.workers === 1 ? "" : "s"}`)),
        h(
          "div",
          { class: "card wide" },
          h("h2", {}, "Queues"),
          table("Each queue now", [
            ["queue", (q) => q.name],
            ["waiting", (q) => q.waiting],
            ["running", (q) => q.running],
            ["deferred", (q) => q.deferred],
            ["oldest waiting", (q) => seconds(q.oldestWaitingAgeS)],
            ["workers", (q) => q.workers],
          ], queues),
        ),
        h("div", { class: "card" }, h("h2", {}, "Workers"), h("p", {}, `${workersNow.filter((w) => w.state === "live").length} live, ${workersNow.filter((w) => w.state === "lost").length} lost`)),
        h("div", { class: "card wide" }, h("h2", {}, "Last hour"), chart(hourly, "Jobs per minute, last hour"), throughput(hour)),
        h("div", { class: "card wide" }, h("h2", {}, "Last day"), chart(daily, "Jobs per half hour, last day"), throughput(day)),
        h(
          "div",
          { class: "card wide" },
          h("h2", {}, "System alerts"),
          table("Open system alerts", [
            ["severity", (a) => badge(a.severity)],
            ["kind", (a) => a.kind],
            ["message", (a) => a.message],
            ["since", (a) => when(a.since)],
          ], alerts, "No open alerts."),
        ),
      );
    };
    view.live = (message) => message.tasks && soon(view, 2000);
    await reread(view, true);
  }

  // Jobs done (green) and failed (red) per step as stacked SVG bars, each with its numbers as a tooltip.
  function chart(history, label) {
    const svg = (tag, attrs, ...children) => {
      const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
      for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
      el.append(...children);
      return el;
    };
    const points = history.points;
    const most = Math.max(1, ...points.map((p) => p.complete + p.failed));
    const [width, height] = [600, 100];
    const slot = width / points.length;
    const done = points.reduce((sum, p) => sum + p.complete, 0);
    const failed = points.reduce((sum, p) => sum + p.failed, 0);
    const bars = points.map((p, index) => {
      const [x, w] = [index * slot + 0.5, Math.max(1, slot - 1)];
      const [up, down] = [(height * p.complete) / most, (height * p.failed) / most];
      return svg(
        "g",
        {},
        svg("title", {}, `${when(p.at)}: ${p.complete} done, ${p.failed} failed`),
        svg("rect", { x, y: height - up - down, width: w, height: up, class: "done" }),
        svg("rect", { x, y: height - down, width: w, height: down, class: "failed" }),
      );
    });
    const summary = `${label}: ${done} done, ${failed} failed`;
    return h(
      "figure",
      { class: "chart" },
      svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": summary }, ...bars),
      h("figcaption", {}, `${summary} (most in one bar: ${most})`),
    );
  }

  // Done and failed per job as bars (widths relative to the busiest job), with the numbers as text.
  function throughput(stats) {
    const rows = stats.filter((s) => s.counts.complete || s.counts.failed);
    if (!rows.length) return h("p", { class: "empty" }, "No jobs finished.");
    const most = Math.max(...rows.map((s) => (s.counts.complete || 0) + (s.counts.failed || 0)));
    return h(
      "ul",
      { class: "bars" },
      rows.map((s) => {
        const done = s.counts.complete || 0;
        const failed = s.counts.failed || 0;
        const bar = h("span", { class: "bar" }, h("span", { class: "done" }), h("span", { class: "failed" }));
        bar.children[0].style.width = `${(100 * done) / most}%`;
        bar.children[1].style.width = `${(100 * failed) / most}%`;
        return h("li", {}, h("span", { class: "name" }, s.name), bar, h("span", { class: "count" }, `${done} done, ${failed} failed, p95 ${seconds(s.durationS.p95)}`));
      }),
    );
  }

  async function tasks(container, arg, view) {
    const filters = Object.fromEntries(new URLSearchParams(arg));
    const offset = Number(filters.offset) || 0;
    const form = h(
      "form",
      { class: "filters", "aria-label": "Filter tasks" },
      field("State", h("select", { name: "state" }, ["", "queued", "in_progress", "retrying", "complete", "failed", "cancelled"].map((s) => h("option", { value: s, selected: filters.state === s }, s || "any")))),
      field("Job", h("input", { name: "name", value: filters.name || "" })),
      field("Queue", h("select", { name: "queue" }, ["", "positions", "reports", "cleanup", "notifications", "commands"].map((q) => h("option", { value: q, selected: filters.queue === q }, q || "any")))),
      field("From", h("input", { name: "from", type: "datetime-local", value: filters.from || "" })),
      field("To", h("input", { name: "to", type: "datetime-local", value: filters.to || "" })),
      field("Arguments contain", h("input", { name: "q", type: "search", maxlength: 200, value: filters.q || "" })),
      h("button", { type: "submit" }, "Filter"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      location.hash = `#/tasks/${new URLSearchParams(fields(form)).toString()}`;
    });
    const outcome = h("div", { class: "outcome" });
    const list = h("div");
    const pager = h("div", { class: "pager" });
    const apiFilters = {
      state: filters.state,
      name: filters.name,
      queue: filters.queue,
      from: filters.from ? new Date(filters.from).toISOString() : "",
      to: filters.to ? new Date(filters.to).toISOString() : "",
      q: filters.q,
    };
    const retryAll = h("button", { type: "button" }, "Retry all failed matching");
    retryAll.addEventListener("click", () =>
      act(retryAll, outcome, async () => {
        const { data } = await api("POST", `/api/tasks/retry-failed${query({ ...apiFilters, state: "" })}`);
        reread(view);
        return `${data.count} tasks queued again.`;
      }),
    );
    container.append(form, h("div", { class: "actions" }, state.user.role === "admin" ? retryAll : "", outcome), list, pager);
    view.refresh = async () => {
      const rows = await get(`/api/tasks${query({ ...apiFilters, limit: PAGE, offset })}`);
      fill(list,
        table("Tasks, newest first", [
          ["task", (t) => h("a", { href: `#/task/${encodeURIComponent(t.id)}` }, t.name)],
          ["queue", (t) => t.queue],
          ["state", (t) => badge(t.state)],
          ["progress", (t) => progressBar(t.progress)],
          ["enqueued", (t) => when(t.enqueuedAt)],
          ["took", (t) => seconds(t.durationS)],
        ], rows, "No tasks match."),
      );
      const page = (to) => `#/tasks/${new URLSearchParams({ ...filters, offset: to }).toString()}`;
      fill(pager,
        offset > 0 ? h("a", { href: page(Math.max(0, offset - PAGE)) }, "← newer") : "",
        ` ${offset + 1}–${offset + rows.length} `,
        rows.length === PAGE ? h("a", { href: page(offset + PAGE) }, "older →") : "",
      );
    };
    // Task records that change are announced on the socket: the page reads again, at most once a second.
    view.live = (message) => message.tasks && soon(view, 1000);
    view.liveOnly = true;
    const [, runner] = await Promise.all([reread(view, true), state.user.role === "admin" ? runForm() : null]);
    if (runner) container.append(runner);
  }

  // "Run a job by hand": a form built from GET /api/tasks/jobs, one input per parameter.
  async function runForm() {
    const jobs = await get("/api/tasks/jobs");
    const params = h("div", { class: "params" });
    const select = h("select", { name: "job" }, jobs.map((j) => h("option", { value: j.name }, `${j.name} (${j.queue})`)));
    const outcome = h("div", { class: "outcome" });
    const button = h("button", { type: "submit" }, "Run");
    const form = h("form", { class: "run", "aria-labelledby": "run-title" }, h("h2", { id: "run-title" }, "Run a job by hand"), field("Job to run", select), params, button, outcome);
    const showParams = () => {
      const job = jobs.find((j) => j.name === select.value);
      fill(params,
        ...(job ? job.parameters : []).map((p) =>
          field(
            `${p.name} (${p.type}${p.required ? ", required" : ""})`,
            p.type === "boolean"
              ? h("input", { name: p.name, type: "checkbox", checked: p.default === true })
              : h("input", { name: p.name, required: p.required, placeholder: p.default === undefined || p.default === null ? "" : JSON.stringify(p.default) }),
          ),
        ),
      );
    };
    select.addEventListener("change", showParams);
    showParams();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      act(button, outcome, async () => {
        const job = jobs.find((j) => j.name === select.value);
        const args = {};
        for (const p of job.parameters) {
          const el = form.elements[p.name];
          if (p.type === "boolean") args[p.name] = el.checked;
          else if (el.value !== "") args[p.name] = p.type === "string" ? el.value : parseValue(el.value);
        }
        const { data } = await api("POST", `/api/tasks/run/${encodeURIComponent(job.name)}`, args);
        location.hash = `#/task/${encodeURIComponent(data.task_id)}`;
        return "";
      });
    });
    return form;
  }

  function parseValue(text) {
    try {
      return JSON.parse(text);
    } catch (_) {
      return text;
    }
  }

  async function task(container, id, view) {
    const body = h("div");
    const outcome = h("span", { class: "outcome" });
    container.append(body);
    view.refresh = async () => {
      const t = await get(`/api/tasks/task/${encodeURIComponent(id)}`);
      const cancel = h("button", { type: "button" }, "Cancel");
      cancel.addEventListener("click", () =>
        act(cancel, outcome, async () => {
          await api("DELETE", `/api/tasks/task/${encodeURIComponent(id)}`);
          await reread(view);
          return "Cancelled.";
        }),
      );
      const retry = h("button", { type: "button" }, "Retry");
      retry.addEventListener("click", () =>
        act(retry, outcome, async () => {
          const { data } = await api("POST", `/api/tasks/task/${encodeURIComponent(id)}/retry`);
          location.hash = `#/task/${encodeURIComponent(data.task_id)}`;
          return "";
        }),
      );
      const open = t.state === "queued" || t.state === "in_progress" || t.state === "retrying";
      fill(body,
        h(
          "dl",
          { class: "facts" },
          [
            ["Job", t.name],
            ["Queue", t.queue],
            ["State", badge(t.state)],
            ["Progress", progressBar(t.progress) || "—"],
            ["Enqueued", when(t.enqueuedAt)],
            ["Started", when(t.startedAt)],
            ["Finished", when(t.finishedAt)],
            ["Took", seconds(t.durationS)],
            ["Tries", t.tries],
            ["Worker", t.worker || "—"],
            ["Retried as", t.retriedAs ? h("a", { href: `#/task/${encodeURIComponent(t.retriedAs)}` }, t.retriedAs) : "—"],
          ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
        ),
        h("div", { class: "actions" }, open ? cancel : "", (t.state === "failed" || t.state === "cancelled") && !t.retriedAs ? retry : "", outcome),
        h("h2", {}, "Arguments"),
        h("pre", { class: "args", tabindex: 0 }, json(t.args)),
        t.result !== null && t.result !== undefined ? [h("h2", {}, "Result"), h("pre", { class: "result", tabindex: 0 }, json(t.result))] : "",
        t.error ? [h("h2", {}, "Error"), h("p", { class: "error-message" }, `${t.error.type}: ${t.error.message}`), t.error.traceback ? h("pre", { class: "traceback", tabindex: 0 }, t.error.traceback) : ""] : "",
      );
    };
    view.live = (message) => message.tasks && message.tasks.some((change) => change.id === id) && soon(view, 200);
    view.liveOnly = true;
    await reread(view, true);
  }

  async function workers(container, _arg, view) {
    const body = h("div");
    container.append(body);
    view.refresh = async () => {
      const rows = await get("/api/tasks/workers");
      fill(body,
        table("Worker processes", [
          ["worker", (w) => w.id],
          ["state", (w) => badge(w.state)],
          ["queues", (w) => w.queues.join(", ")],
          ["concurrency", (w) => Object.entries(w.concurrency || {}).map(([queue, n]) => `${queue} ${n}`).join(", ")],
          ["running", (w) => (w.running.length ? w.running.map((job) => [h("a", { href: `#/task/${encodeURIComponent(job.id)}` }, job.name), " "]) : "—")],
          ["done", (w) => w.done],
          ["failed", (w) => w.failed],
          ["started", (w) => when(w.started)],
          ["last heartbeat", (w) => ago(w.lastHeartbeat)],
        ], rows, "No worker has reported."),
      );
    };
    await reread(view, true);
  }

  async function devicesMap(container, _arg, view) {
    const mapBox = h("div", { id: "map", class: "map", role: "region", "aria-label": "Map of devices" });
    const list = h("div", { class: "devices" });
    const detail = h("div", { class: "detail", "aria-live": "polite" });
    container.append(h("div", { class: "split" }, mapBox, h("div", {}, detail, list)));
    const map = L.map(mapBox, { worldCopyJump: true, maxZoom: 19 }).setView([20, 0], 2);
    let listTimer = null;
    view.stop = () => {
      clearTimeout(listTimer);
      map.remove();
    };
    const tiles = document.body.dataset.tiles;
    if (tiles) L.tileLayer(tiles, { maxZoom: 19, attribution: "© OpenStreetMap contributors" }).addTo(map);
    const cluster = L.markerClusterGroup({ disableClusteringAtZoom: UNCLUSTERED_ZOOM, showCoverageOnHover: false });
    const trails = L.layerGroup();
    map.addLayer(cluster);
    const markers = new Map();
    const lines = new Map();
    let fitted = false;

    // Trails only where they can be told apart: zoomed in. Zoomed out over a fleet they would be a
    // thousand lines redrawn every second for nothing.
    const drawTrail = (id) => {
      const trail = state.trails.get(id) || [];
      const line = lines.get(id);
      if (line) line.setLatLngs(trail);
      else {
        lines.set(id, L.polyline(trail, { weight: 3, opacity: 0.6 }));
        trails.addLayer(lines.get(id));
      }
    };
    map.on("zoomend", () => {
      const near = map.getZoom() >= TRAIL_ZOOM;
      if (near && !map.hasLayer(trails)) {
        for (const id of state.trails.keys()) drawTrail(id);
        map.addLayer(trails);
      } else if (!near && map.hasLayer(trails)) map.removeLayer(trails);
    });

    // Markers move as each message arrives, only those of the devices it names.
    // While clusters are drawn, moving markers one by one makes the cluster group take each out and
    // put it back with its icons redrawn: the message's markers go out and back in once, together.
    const place = (positions) => {
      const added = [];
      const moved = [];
      for (const position of positions) {
        const id = position.deviceId;
        const device = state.devices.get(id);
        const name = device ? device.name : `device ${id}`;
        const where = [position.latitude, position.longitude];
        const marker = markers.get(id);
        if (marker) moved.push([marker, where]);
        else {
          const made = L.marker(where, { title: name, alt: name, keyboard: true });
          made.on("click", () => showDevice(id));
          markers.set(id, made);
          added.push(made);
        }
        if (map.getZoom() >= TRAIL_ZOOM) drawTrail(id);
      }
      if (map.getZoom() < UNCLUSTERED_ZOOM && moved.length > 1) {
        const layers = moved.map(([marker]) => marker);
        cluster.removeLayers(layers);
        for (const [marker, where] of moved) marker.setLatLng(where);
        added.push(...layers);
      } else for (const [marker, where] of moved) marker.setLatLng(where);
      if (added.length) cluster.addLayers(added);
      if (!fitted && markers.size) {
        fitted = true;
        map.fitBounds(L.latLngBounds([...state.positions.values()].map((p) => [p.latitude, p.longitude])), { maxZoom: 14, padding: [30, 30] });
      }
    };

    const showList = () => {
      const rows = [...state.devices.values()].sort((a, b) => a.name.localeCompare(b.name));
      fill(list,
        table("Devices", [
          ["device", (d) => h("button", { type: "button", class: "link", onclick: () => showDevice(d.id) }, d.name)],
          ["status", (d) => badge(d.status || "unknown")],
          ["last update", (d) => ago(d.lastUpdate)],
          ["speed", (d) => (state.positions.has(d.id) ? h("span", { class: "nowrap" }, `${Number(state.positions.get(d.id).speed || 0).toFixed(1)} kn`) : "—")],
        ], rows, "No devices yet: one appears here when it first reports."),
      );
    };

    const showDevice = async (id) => {
      const device = state.devices.get(id);
      const position = state.positions.get(id);
      if (position) map.setView([position.latitude, position.longitude], Math.max(map.getZoom(), 16)); // past clustering
      fill(detail, h("h2", {}, device ? device.name : `device ${id}`), h("p", {}, "Loading today’s statistics…"));
      try {
        const stats = await get(`/api/devices/${id}/statistics`);
        const today = stats.today || {};
        fill(detail,
          h("h2", {}, device ? device.name : `device ${id}`),
          h(
            "dl",
            { class: "facts" },
            [
              ["Unique id", device ? device.uniqueId : "—"],
              ["Status", device ? badge(device.status || "unknown") : "—"],
              ["Last update", device ? when(device.lastUpdate) : "—"],
              ["Positions today", today.positions ?? 0],
              ["Distance today", `${((today.distance || 0) / 1000).toFixed(2)} km`],
              ["Top speed today", `${Number(today.maxSpeed || 0).toFixed(1)} kn`],
              ["Moving today", seconds(today.movingTime || 0)],
            ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
          ),
        );
      } catch (error) {
        detail.append(notice(error.message));
      }
    };

    // The list costs more with a large fleet: it is drawn again at most once a second, or every 5 s
    // beyond LARGE_FLEET devices.
    const listSoon = () => {
      listTimer =
        listTimer ||
        setTimeout(
          () => {
            listTimer = null;
            if (state.view === view) showList();
          },
          state.devices.size > LARGE_FLEET ? 5000 : 1000,
        );
    };

    // The socket sends every device and its newest position on connect, then each change; without
    // it (reconnecting), the same is read from the API on the non-overlapping timer.
    view.live = (message) => {
      if (message.positions) place(message.positions);
      if (message.positions || message.devices) listSoon();
    };
    view.liveOnly = true;
    view.refresh = async () => {
      const [devices, positions] = await Promise.all([get("/api/devices"), get("/api/positions")]);
      onLive({ devices, positions: positions.filter((p) => (state.positions.get(p.deviceId) || {}).id !== p.id) });
    };
    if (!state.socketUp) await reread(view, true);
    place([...state.positions.values()]);
    showList();
  }

  async function reports(container, _arg, view) {
    const devices = await get("/api/devices");
    const outcome = h("div", { class: "outcome" });
    const day = new Date();
    day.setHours(0, 0, 0, 0);
    const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    const button = h("button", { type: "submit" }, "Request report");
    const form = h(
      "form",
      { class: "filters", "aria-labelledby": "request-title" },
      h("h2", { id: "request-title" }, "Request a report"),
      field("Kind", h("select", { name: "kind" }, ["trips", "stops", "summary", "route", "events", "detailed", "fleet"].map((k) => h("option", { value: k }, k)))),
      field("Device", h("select", { name: "device" }, h("option", { value: "" }, "every device (a fleet report)"), devices.map((d) => h("option", { value: d.id }, d.name)))),
      field("From", h("input", { name: "from", type: "datetime-local", required: true, value: local(new Date(day.getTime() - 86400000)) })),
      field("To", h("input", { name: "to", type: "datetime-local", required: true, value: local(new Date()) })),
      field("Also CSV", h("input", { name: "csv", type: "checkbox" })),
      field("Also XLSX", h("input", { name: "xlsx", type: "checkbox" })),
      button,
      outcome,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      act(button, outcome, async () => {
        const f = fields(form);
        const formats = ["json", f.csv && "csv", f.xlsx && "xlsx"].filter(Boolean);
        const range = { start: new Date(f.from).toISOString(), end: new Date(f.to).toISOString(), formats };
        const fleet = f.kind === "fleet" || !f.device;
        const body = fleet
          ? { ...range, ...(f.device ? { device_ids: [Number(f.device)] } : {}) }
          : { ...range, device_id: Number(f.device), kind: f.kind };
        const { data } = await api("POST", `/api/tasks/report/${fleet ? "fleet" : "device"}`, body);
        await reread(view);
        return `Report ${data.report_id} queued.`;
      });
    });
    const list = h("div");
    container.append(form, list);
    view.refresh = async () => {
      const rows = await get("/api/reports?limit=50");
      fill(list,
        table("Reports, newest first", [
          ["report", (r) => `#${r.id} ${r.kind}`],
          ["status", (r) => [badge(r.status), " ", progressBar(r.progress)]],
          ["requested", (r) => when(r.createdAt)],
          ["rows", (r) => Object.entries(r.rowCounts || {}).map(([k, v]) => `${k} ${v}`).join(", ")],
          ["download", (r) => (r.status === "complete" ? downloads(r) : r.error || "")],
        ], rows, "No reports yet."),
      );
    };
    // A report moves with its job: the job's changes on the socket say when to read the list again.
    view.live = (message) => message.tasks && message.tasks.some((change) => change.queue === "reports") && soon(view, 500);
    view.liveOnly = true;
    await reread(view, true);
  }

  function downloads(report) {
    const outcome = h("span", { class: "outcome" });
    return h(
      "span",
      { class: "downloads" },
      ["json", "csv", "xlsx"].map((format) => {
        const button = h("button", { type: "button", "aria-label": `Download report ${report.id} as ${format.toUpperCase()}` }, format.toUpperCase());
        button.addEventListener("click", () =>
          act(button, outcome, () => download(`/api/reports/${report.id}/download?format=${format}`, `report-${report.id}`)),
        );
        return button;
      }),
      outcome,
    );
  }

  async function events(container, _arg, view) {
    const recent = h("div");
    const notified = h("div");
    const deliveries = h("div");
    container.append(h("h2", {}, "Recent events"), recent, h("h2", {}, "Your web notifications"), notified, h("h2", {}, "Deliveries"), deliveries);
    const device = (id) => (state.devices.get(id) || {}).name || id || "—";
    const eventColumns = [
      ["time", (e) => when(e.eventTime)],
      ["type", (e) => e.type],
      ["device", (e) => device(e.deviceId)],
      ["details", (e) => details(e.attributes)],
    ];
    let shown = [];
    const showNotified = () =>
      fill(notified, table("Your web notifications, newest first", eventColumns, shown, "No notifications in the last 24 hours."));
    // Events are stored with the positions that make them: a batch of positions (or a notification)
    // on the socket is the moment to read them again, at most every 2 s.
    view.live = (message) => {
      if (message.events) {
        shown = [...message.events, ...shown].slice(0, 100);
        showNotified();
      }
      if (message.events || message.positions) soon(view, 2000);
    };
    view.refresh = async () => {
      const [latest, mine, log] = await Promise.all([
        get("/api/events?limit=50"),
        get("/api/notifications/recent"),
        get("/api/notifications/deliveries?limit=50"),
      ]);
      fill(recent, table("Events about your devices, newest first", eventColumns, latest, "No events yet."));
      shown = mine;
      showNotified();
      fill(deliveries,
        table("Notification deliveries, newest first", [
          ["event", (d) => `${d.type} (${device(d.deviceId)})`],
          ["channel", (d) => d.channel],
          ["state", (d) => badge(d.state)],
          ["attempts", (d) => d.attempts],
          ["last error", (d) => d.lastError || ""],
          ["", (d) => (d.state === "failed" || d.state === "dead" ? retryDelivery(d, view) : "")],
        ], log, "No deliveries yet."),
      );
    };
    await reread(view, true);
  }

  // An event's attributes as short text: its message if it has one, else `key=value` pairs.
  function details(attributes) {
    if (!attributes) return "";
    if (attributes.message) return String(attributes.message);
    const text = Object.entries(attributes)
      .map(([key, value]) => `${key}=${typeof value === "object" ? JSON.stringify(value) : value}`)
      .join(", ");
    return text.length > 160 ? `${text.slice(0, 159)}…` : text;
  }

  function retryDelivery(delivery, view) {
    const outcome = h("span", { class: "outcome" });
    const button = h("button", { type: "button" }, "Retry");
    button.addEventListener("click", () =>
      act(button, outcome, async () => {
        await api("POST", `/api/notifications/deliveries/${delivery.id}/retry`);
        await reread(view);
        return "";
      }),
    );
    return h("span", {}, button, outcome);
  }

  async function commands(container, _arg, view) {
    const devices = await get("/api/devices");
    const outcome = h("div", { class: "outcome" });
    const typeSelect = h("select", { name: "type" });
    const deviceSelect = h("select", { name: "deviceId", required: true }, devices.map((d) => h("option", { value: d.id }, d.name)));
    const attributes = h("div", { class: "params" });
    let types = [];
    const showAttributes = () => {
      const type = types.find((t) => t.type === typeSelect.value);
      fill(attributes, ...(type ? type.attributes : []).map((a) => field(`${a.key} (${a.type})`, h("input", { name: `attr:${a.key}`, required: a.required }))));
    };
    const loadTypes = async () => {
      types = deviceSelect.value ? await get(`/api/commands/types?deviceId=${deviceSelect.value}`) : [];
      const chosen = typeSelect.value; // kept when the new device's transport carries it too
      fill(typeSelect, ...types.map((t) => h("option", { value: t.type, selected: t.type === chosen }, t.type)));
      showAttributes();
    };
    deviceSelect.addEventListener("change", loadTypes);
    typeSelect.addEventListener("change", showAttributes);
    const button = h("button", { type: "submit" }, "Send");
    const form = h("form", { class: "filters", "aria-labelledby": "send-title" }, h("h2", { id: "send-title" }, "Send a command"), field("Device", deviceSelect), field("Type", typeSelect), attributes, button, outcome);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      act(button, outcome, async () => {
        const given = {};
        const type = types.find((t) => t.type === typeSelect.value);
        for (const a of type ? type.attributes : []) {
          const value = attributes.querySelector(`[name="attr:${a.key}"]`).value;
          if (value !== "") given[a.key] = a.type === "string" ? value : parseValue(value);
        }
        const { data } = await api("POST", "/api/commands/send", { deviceId: Number(deviceSelect.value), type: typeSelect.value, attributes: given });
        await reread(view);
        return `Command ${data.id} queued.`;
      });
    });
    const list = h("div");
    container.append(devices.length ? form : h("p", { class: "empty" }, "No devices to command."), list);
    await loadTypes();
    view.refresh = async () => {
      const rows = await get("/api/commands/queue?limit=100");
      fill(list,
        table("Commands, newest first", [
          ["command", (c) => `#${c.id} ${c.type}`],
          ["device", (c) => (devices.find((d) => d.id === c.deviceId) || {}).name || c.deviceId],
          ["state", (c) => badge(c.state)],
          ["created", (c) => when(c.createdAt)],
          ["result", (c) => c.result || c.error || ""],
          ["", (c) => (c.state === "queued" ? cancelCommand(c, view) : "")],
        ], rows, "No commands yet."),
      );
    };
    await reread(view, true);
  }

  function cancelCommand(command, view) {
    const outcome = h("span", { class: "outcome" });
    const button = h("button", { type: "button", "aria-label": `Cancel command ${command.id}` }, "Cancel");
    button.addEventListener("click", () =>
      act(button, outcome, async () => {
        await api("DELETE", `/api/commands/${command.id}`);
        await reread(view);
        return "";
      }),
    );
    return h("span", {}, button, outcome);
  }

  async function cleanup(container, _arg, view) {
    const status = h("div");
    const outcome = h("div", { class: "outcome" });
    const kind = h("select", { name: "kind" }, ["positions", "events", "cache", "duplicates", "orphans", "optimize"].map((k) => h("option", { value: k }, k)));
    const days = h("input", { name: "days_to_keep", type: "number", min: 0, placeholder: "default" });
    const dry = h("input", { name: "dry_run", type: "checkbox", checked: true });
    const button = h("button", { type: "submit" }, "Run");
    const daysField = field("Days to keep", days);
    kind.addEventListener("change", () => {
      daysField.hidden = !["positions", "events"].includes(kind.value); // the others take no days
    });
    const form = h("form", { class: "filters", "aria-labelledby": "cleanup-title" }, h("h2", { id: "cleanup-title" }, "Run a cleanup job"), field("Job", kind), daysField, field("Dry run (count only)", dry), button, outcome);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      act(button, outcome, async () => {
        const body = {};
        body.dry_run = dry.checked;
        if (days.value !== "" && (kind.value === "positions" || kind.value === "events")) body.days_to_keep = Number(days.value);
        const { data } = await api("POST", `/api/tasks/cleanup/${kind.value}`, body);
        location.hash = `#/task/${encodeURIComponent(data.task_id)}`;
        return "";
      });
    });
    container.append(form, status);
    view.refresh = async () => {
      const s = await get("/api/cleanup/status");
      const mb = (bytes) => `${(bytes / 1048576).toFixed(1)} MB`;
      fill(status,
        h("h2", {}, "Tables"),
        table("Big tables", [
          ["table", (t) => t.name || t.table],
          ["size", (t) => (t.bytes === null ? "—" : mb(t.bytes))],
          ["rows (estimate)", (t) => t.rowsEstimate ?? "—"],
        ], s.tables || []),
        h("h2", {}, "Partitions"),
        table("Partitions (PostgreSQL)", [
          ["partition", (p) => p.table],
          ["of", (p) => p.of],
          ["range", (p) => (p.default ? "default" : `${when(p.from)} – ${when(p.to)}`)],
          ["size", (p) => mb(p.bytes || 0)],
          ["rows (estimate)", (p) => p.rowsEstimate ?? "—"],
        ], s.partitions || [], "No partitions (SQLite keeps one table)."),
        h("h2", {}, "Next retention run"),
        h("pre", { class: "result", tabindex: 0 }, json(s.nextRun || {})),
      );
    };
    await reread(view, true);
  }

  // ---- start -----------------------------------------------------------------------------------

  async function start() {
    state.user = (await api("GET", "/api/session")).data;
    sessionStorage.setItem(TOKEN_KEY, state.token);
    document.getElementById("who").textContent = `${state.user.name} (${state.user.role})`;
    document.getElementById("signout").hidden = false;
    startLive();
    await show();
  }

  document.getElementById("signout").addEventListener("click", signOut);
  window.addEventListener("hashchange", show);
  if (state.token) {
    start().catch(() => signedOut("Sign in again."));
  } else showSignIn();
})();
