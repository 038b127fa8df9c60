// vidshard dashboard: polls the JSON API every second and renders devices, live streams,
// jobs and health.
// Plain JavaScript, no build step, no external resources. Data is only ever written with
// textContent (never innerHTML), since job inputs and errors come from users.
"use strict";

(() => {
  const KEY_STORAGE = "vidshard.apiKey";
  const REFRESH_MS = 1000;
  const HIDDEN_REFRESH_MS = 5000; // while the tab is in the background
  const REQUEST_TIMEOUT_MS = 10000;
  const JOB_LIMIT = 100;
  const SNAPSHOT_MS = 2000; // a live stream's snapshot is fetched again this often
  const GIB = 1024 ** 3;
  const MIB = 1024 ** 2;

  const $ = (selector) => document.querySelector(selector);

  // --- the API key --------------------------------------------------------------------

  let memoryKey = ""; // used where localStorage is not available
  function apiKey() {
    try {
      return localStorage.getItem(KEY_STORAGE) || "";
    } catch {
      return memoryKey;
    }
  }
  function setApiKey(key) {
    memoryKey = key;
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage disabled: the key lasts as long as the page
    }
  }

  // The docs pages (/docs, /redoc) are loaded by the browser itself, which cannot send the
  // key header: once the server took the key, ask it for the docs cookie (it holds no key).
  let docsKey = "";
  async function openDocsSession(key) {
    if (!key || key === docsKey) return;
    docsKey = key;
    try {
      const init = { method: "POST", headers: { "X-API-Key": key }, redirect: "manual" };
      const response = await fetch("/docs/login", { ...init, cache: "no-store" });
      if (response.status === 401) docsKey = "";
    } catch {
      docsKey = ""; // offline: try again on the next refresh
    }
  }
  function closeDocsSession() {
    docsKey = "";
    fetch("/docs/logout", { method: "POST", cache: "no-store" }).catch(() => {});
  }

  // --- talking to the API -------------------------------------------------------------

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(status, body) {
      super(describeError(status, body));
      this.status = status;
      this.error = body && typeof body.error === "string" ? body.error : null;
    }
  }

  // The API answers errors as {"error", "detail"}; FastAPI's own as {"detail"}.
  function describeError(status, body) {
    if (body && typeof body.detail === "string" && body.detail) return body.detail;
    if (body && Array.isArray(body.detail)) {
      return body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    }
    return `the server answered HTTP ${status}`;
  }

  async function readBody(response) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }

  async function api(path, { method = "GET", json } = {}) {
    const headers = new Headers();
    const key = apiKey();
    if (key) headers.set("X-API-Key", key);
    const init = { method, headers, cache: "no-store" };
    if (json !== undefined) {
      headers.set("Content-Type", "application/json");
      init.body = JSON.stringify(json);
    }
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    init.signal = controller.signal;
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new Error(
        err.name === "AbortError"
          ? "the server did not answer in time"
          : "the server is unreachable"
      );
    } finally {
      clearTimeout(timer);
    }
    if (response.status === 401) {
      const body = await readBody(response);
      needKey(Boolean(key));
      throw new AuthError(describeError(401, body));
    }
    if (!response.ok) throw new ApiError(response.status, await readBody(response));
    return response;
  }

  // Uploads go through XMLHttpRequest, which (unlike fetch) reports upload progress.
  function upload(file, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/v1/uploads");
      const key = apiKey();
      if (key) xhr.setRequestHeader("X-API-Key", key);
      xhr.responseType = "json";
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
        else if (xhr.status === 401) {
          needKey(Boolean(key));
          reject(new AuthError(describeError(401, xhr.response)));
        } else reject(new ApiError(xhr.status, xhr.response));
      };
      xhr.onerror = () => reject(new Error("the upload failed: the server closed the connection"));
      const form = new FormData();
      form.append("file", file);
      xhr.send(form);
    });
  }

  // --- formatting ---------------------------------------------------------------------

  const shortId = (id) => String(id).slice(0, 8);
  const basename = (path) => String(path).split(/[\\/]/).pop() || String(path);

  function formatBytes(bytes) {
    if (bytes == null) return "—";
    return bytes >= GIB ? `${(bytes / GIB).toFixed(1)} GiB` : `${Math.round(bytes / MIB)} MiB`;
  }

  function formatDuration(seconds) {
    if (seconds == null) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} m ${String(s % 60).padStart(2, "0")} s`;
    const m = Math.floor(s / 60);
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} m`;
  }

  function formatTime(epochSeconds) {
    const date = new Date(epochSeconds * 1000);
    const today = new Date().toDateString() === date.toDateString();
    return today ? date.toLocaleTimeString() : date.toLocaleString();
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function bar() {
    const outer = el("div", "bar");
    outer.append(el("span"));
    return outer;
  }

  function setBar(outer, fraction) {
    const known = fraction != null && Number.isFinite(fraction);
    outer.classList.toggle("unknown", !known);
    const pct = known ? Math.min(100, Math.max(0, fraction * 100)) : 0;
    outer.firstChild.style.width = `${pct}%`;
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  // --- health -------------------------------------------------------------------------

  async function refreshHealth() {
    const badge = $("#health");
    let status = "offline";
    let text = "offline";
    try {
      const response = await fetch("/health", { cache: "no-store" });
      const body = await readBody(response);
      if (body && response.ok) {
        status = "ok";
        const slots = `${body.slots_alive}/${body.slots_total} slots`;
        text = `healthy · ${slots} · ${body.running_jobs} running`;
      } else if (body) {
        status = "unhealthy";
        text = `unhealthy: ${(body.reasons || []).join("; ") || `HTTP ${response.status}`}`;
      }
    } catch {
      // offline
    }
    badge.dataset.status = status;
    setText(badge, text);
  }

  // --- devices ------------------------------------------------------------------------

  function deviceCard(device) {
    const card = el("div", "device");
    card.dataset.device = device.device;
    const head = el("div", "device-head");
    head.append(el("span", "device-label"), el("span", "device-name"), el("span", "fps"));
    const util = el("div", "metric util");
    util.append(el("span", null, "Utilisation"), bar(), el("span", "value"));
    const memory = el("div", "metric memory");
    memory.append(el("span", null, "Memory"), bar(), el("span", "value"));
    const temperature = el("div", "metric temperature");
    temperature.append(el("span", null, "Temperature"), el("span"), el("span", "value"));
    card.append(head, util, memory, temperature, el("div", "slots"));
    return card;
  }

  function updateDevice(card, device) {
    card.dataset.quarantined = String(device.quarantined);
    setText(card.querySelector(".device-label"), device.device);
    const name = card.querySelector(".device-name");
    setText(name, device.quarantined ? `${device.name} · quarantined` : device.name);
    name.title = device.name;
    setText(card.querySelector(".device-head .fps"), `${device.fps.toFixed(1)} fps`);

    const util = card.querySelector(".util");
    const pct = device.utilization_pct;
    util.dataset.value = pct == null ? "" : String(pct);
    setBar(util.querySelector(".bar"), pct == null ? null : pct / 100);
    setText(util.querySelector(".value"), pct == null ? "—" : `${Math.round(pct)} %`);

    const memory = card.querySelector(".memory");
    const used = device.memory_used_bytes;
    const total = device.memory_total_bytes;
    setBar(memory.querySelector(".bar"), used != null && total ? used / total : null);
    setText(memory.querySelector(".value"), `${formatBytes(used)} / ${formatBytes(total)}`);

    const temperature = card.querySelector(".temperature");
    temperature.hidden = device.temperature_c == null;
    if (device.temperature_c != null) {
      setText(temperature.querySelector(".value"), `${Math.round(device.temperature_c)} °C`);
    }

    const chips = device.slots.map((slot) => {
      const chip = el("span", "chip");
      chip.dataset.slot = slot.label;
      chip.dataset.state = slot.state;
      chip.append(`${slot.label} · ${slot.state}`);
      if (slot.job) {
        chip.dataset.job = slot.job;
        chip.append(" · ", el("span", "job", shortId(slot.job)));
      }
      const facts = [slot.model && `model ${slot.model}`, slot.job && `job ${slot.job}`];
      facts.push(`${slot.units} units, ${slot.frames} frames`, `${slot.fps.toFixed(1)} fps`);
      if (slot.pid) facts.push(`pid ${slot.pid}`);
      chip.title = facts.filter(Boolean).join("\n");
      return chip;
    });
    card.querySelector(".slots").replaceChildren(...chips);
  }

  function renderDevices(devices) {
    const box = $("#devices");
    const cards = new Map(
      [...box.querySelectorAll(".device")].map((card) => [card.dataset.device, card])
    );
    const headings = new Map(
      [...box.querySelectorAll(".node-head")].map((head) => [head.dataset.node, head])
    );
    // In a cluster (devices carry a node), the devices under one heading per node.
    const nodes = [...new Set(devices.map((device) => device.node || ""))];
    const ordered = [];
    for (const node of nodes) {
      const here = devices.filter((device) => (device.node || "") === node);
      if (node) {
        const head = headings.get(node) || el("h3", "node-head");
        head.dataset.node = node;
        const out = here.filter((device) => device.quarantined).length;
        setText(head, `Node ${node} · ${here.length} device(s)${out ? ` · ${out} quarantined` : ""}`);
        ordered.push(head);
      }
      for (const device of here) {
        const card = cards.get(device.device) || deviceCard(device);
        updateDevice(card, device);
        ordered.push(card);
      }
    }
    if (ordered.length === 0) {
      box.replaceChildren(el("p", "muted empty", "No devices in the pool."));
    } else if (
      box.children.length !== ordered.length ||
      ordered.some((card, i) => box.children[i] !== card)
    ) {
      box.replaceChildren(...ordered);
    }
  }

  // --- jobs ---------------------------------------------------------------------------

  const COLUMNS = [
    "id", "input", "state", "progress-cell", "fps num", "eta num", "queue num", "created", "actions",
  ];

  function jobRow(job) {
    const row = document.createElement("tr");
    row.dataset.jobId = job.id;
    for (const name of COLUMNS) row.append(el("td", name));
    const cells = row.children;
    cells[1].append(el("div", "name"), el("div", "params muted"), el("div", "job-error"));
    cells[2].append(el("span", "badge"));
    const progress = el("div", "progress");
    progress.append(bar(), el("span", "label"));
    cells[3].append(progress);
    return row;
  }

  function actionsFor(job) {
    if (job.state === "queued" || job.state === "running") {
      const label = job.cancel_requested ? "Cancelling…" : "Cancel";
      const button = el("button", "cancel danger small", label);
      button.type = "button";
      button.disabled = job.cancel_requested;
      return [button];
    }
    if (job.state === "succeeded" && job.result) {
      const link = el("a", "download small", "Download");
      link.href = job.result.url;
      link.download = basename(job.result.path);
      const size = job.result.bytes == null ? "" : ` (${formatBytes(job.result.bytes)})`;
      link.title = job.result.path + size;
      return [link];
    }
    return [];
  }

  function updateJob(row, job) {
    const [idCell, input, state, progressCell, fps, eta, queue, created, actions] = row.children;
    row.dataset.state = job.state;
    setText(idCell, shortId(job.id));
    idCell.title = job.id;

    setText(input.querySelector(".name"), basename(job.input));
    input.querySelector(".name").title = job.input;
    const params = job.params || {};
    const details = [params.model, params.scale ? `×${params.scale}` : null];
    if (job.priority) details.push(`priority ${job.priority}`);
    setText(input.querySelector(".params"), details.filter(Boolean).join(" · "));
    const error = input.querySelector(".job-error");
    const reason = job.state === "failed" && job.error ? job.error : "";
    error.hidden = !reason;
    setText(error, job.error_type && reason ? `${job.error_type}: ${reason}` : reason);

    const badge = state.querySelector(".badge");
    badge.dataset.state = job.state;
    const cancelling = job.cancel_requested && (job.state === "queued" || job.state === "running");
    setText(badge, cancelling ? "cancelling" : job.state);

    const pct = Math.floor(job.progress * 100);
    progressCell.dataset.progress = String(pct);
    setBar(progressCell.querySelector(".bar"), job.progress);
    const total = job.frames_total == null ? "?" : job.frames_total;
    setText(progressCell.querySelector(".label"), `${pct}% · ${job.frames_done}/${total}`);

    setText(fps, job.fps == null ? "—" : job.fps.toFixed(1));
    setText(eta, job.state === "running" ? formatDuration(job.eta_s) : "—");
    setText(queue, job.queue_position == null ? "—" : `#${job.queue_position}`);
    setText(created, formatTime(job.created_at));
    created.title = new Date(job.created_at * 1000).toISOString();

    // Rebuild the buttons only when they change, so a click is never lost to a refresh.
    const signature = `${job.state}|${job.cancel_requested}|${job.result ? job.result.url : ""}`;
    if (row.dataset.actions !== signature) {
      row.dataset.actions = signature;
      actions.replaceChildren(...actionsFor(job));
    }
  }

  function renderJobs(list) {
    const body = $("#jobs tbody");
    const rows = new Map([...body.children].map((row) => [row.dataset.jobId, row]));
    const wanted = list.jobs.map((job) => {
      const row = rows.get(job.id) || jobRow(job);
      rows.delete(job.id);
      updateJob(row, job);
      return row;
    });
    for (const gone of rows.values()) gone.remove();
    wanted.forEach((row, i) => {
      if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null);
    });
    $("#jobs-empty").hidden = list.jobs.length > 0;
    const shown = list.jobs.length;
    const count = list.total > shown ? `(newest ${shown} of ${list.total})` : `(${list.total})`;
    setText($("#jobs-count"), count);
  }

  function showJobsError(message) {
    const box = $("#jobs-error");
    box.hidden = !message;
    box.textContent = message || "";
  }

  async function cancelJob(button) {
    const id = button.closest("tr").dataset.jobId;
    button.disabled = true;
    button.textContent = "Cancelling…";
    showJobsError("");
    try {
      await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    } catch (err) {
      button.disabled = false;
      button.textContent = "Cancel";
      showJobsError(`Could not cancel job ${shortId(id)}: ${err.message}`);
    }
    refreshSoon();
  }

  // With a key, a plain link cannot send the header: fetch the file and save the blob.
  async function download(link) {
    const label = link.textContent;
    link.textContent = "Downloading…";
    showJobsError("");
    try {
      const response = await api(link.getAttribute("href"));
      const url = URL.createObjectURL(await response.blob());
      const save = el("a");
      save.href = url;
      save.download = link.download || "result.mp4";
      document.body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (err) {
      showJobsError(`Could not download: ${err.message}`);
    } finally {
      link.textContent = label;
    }
  }

  // --- live streams -------------------------------------------------------------------

  const FINAL_STREAM_STATES = ["stopped", "failed"];
  const snapshotFetched = new Map(); // stream id -> when its snapshot was last asked for

  function streamCard(stream) {
    const card = el("div", "stream");
    card.dataset.streamId = stream.id;
    const head = el("div", "stream-head");
    const stop = el("button", "stop danger small", "Stop");
    stop.type = "button";
    head.append(el("span", "id"), el("span", "badge"), el("span", "slot muted"), stop);
    const image = el("img", "snapshot");
    image.alt = `the latest frame of stream ${shortId(stream.id)}`;
    const facts = el("div", "facts");
    for (const name of ["fps", "frames", "dropped", "latency", "moves"]) facts.append(el("span", name));
    card.append(head, el("div", "url"), image, facts, el("div", "reason"));
    return card;
  }

  const ms = (value) => (value == null ? "—" : `${Math.round(value)}`);

  function updateStream(card, stream) {
    const final = FINAL_STREAM_STATES.includes(stream.state);
    card.dataset.state = stream.state;
    const id = card.querySelector(".id");
    setText(id, shortId(stream.id));
    id.title = stream.id;
    const badge = card.querySelector(".badge");
    badge.dataset.state = stream.state;
    setText(badge, stream.state);
    setText(card.querySelector(".slot"), stream.slot || "waiting for a slot");
    const url = card.querySelector(".url");
    setText(url, `${stream.url} · ${stream.model}`);
    url.title = stream.url;
    setText(card.querySelector(".fps"), `${stream.fps.toFixed(1)} fps`);
    setText(card.querySelector(".frames"), `${stream.frames_processed} frames`);
    setText(card.querySelector(".dropped"), `${stream.frames_dropped} dropped`);
    const latency = stream.latency_ms;
    setText(card.querySelector(".latency"), `latency p50 ${ms(latency.p50)} / p95 ${ms(latency.p95)} ms`);
    const moves = `${stream.reconnects} reconnects · ${stream.failovers} failovers`;
    setText(card.querySelector(".moves"), moves);
    setText(card.querySelector(".reason"), stream.reason);
    const stop = card.querySelector(".stop");
    stop.hidden = final;
    if (final) stop.disabled = true;
    const image = card.querySelector(".snapshot");
    image.hidden = !stream.snapshot_url && !image.dataset.loaded;
    if (stream.snapshot_url && !document.hidden) {
      const last = snapshotFetched.get(stream.id) || 0;
      const due = !image.dataset.loaded || (!final && Date.now() - last >= SNAPSHOT_MS);
      if (due) refreshSnapshot(image, stream);
    }
  }

  // With a key, an <img src> cannot send the header: fetch the picture and show it as a
  // data: URL (the only kind of image the page's content policy allows besides its own).
  async function refreshSnapshot(image, stream) {
    snapshotFetched.set(stream.id, Date.now());
    try {
      const response = await api(stream.snapshot_url);
      const blob = await response.blob();
      image.src = await new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(reader.error);
        reader.readAsDataURL(blob);
      });
      image.dataset.loaded = String(Date.now());
      image.hidden = false;
    } catch {
      // not there (yet), or the server is busy: the next refresh tries again
    }
  }

  function renderStreams(list) {
    const box = $("#streams");
    const cards = new Map([...box.children].map((card) => [card.dataset.streamId, card]));
    const wanted = list.streams.map((stream) => {
      const card = cards.get(stream.id) || streamCard(stream);
      cards.delete(stream.id);
      updateStream(card, stream);
      return card;
    });
    for (const [id, gone] of cards) {
      gone.remove();
      snapshotFetched.delete(id);
    }
    wanted.forEach((card, i) => {
      if (box.children[i] !== card) box.insertBefore(card, box.children[i] || null);
    });
    $("#streams-empty").hidden = list.streams.length > 0;
    const live = list.streams.filter((s) => !FINAL_STREAM_STATES.includes(s.state)).length;
    setText($("#streams-count"), `(${live} running of ${list.total})`);
  }

  function showStreamsError(message) {
    const box = $("#streams-error");
    box.hidden = !message;
    box.textContent = message || "";
  }

  async function stopStream(button) {
    const id = button.closest(".stream").dataset.streamId;
    button.disabled = true;
    button.textContent = "Stopping…";
    showStreamsError("");
    try {
      await api(`/v1/streams/${encodeURIComponent(id)}`, { method: "DELETE" });
    } catch (err) {
      button.disabled = false;
      showStreamsError(`Could not stop stream ${shortId(id)}: ${err.message}`);
    } finally {
      button.textContent = "Stop";
    }
    refreshSoon();
  }

  function showStreamMessage(kind, message) {
    const error = $("#stream-error");
    const status = $("#stream-status");
    error.hidden = kind !== "error";
    status.hidden = kind !== "status";
    error.textContent = kind === "error" ? message : "";
    status.textContent = kind === "status" ? message : "";
  }

  async function addStream(event) {
    event.preventDefault();
    const button = $("#stream-button");
    const url = $("#stream-url").value.trim();
    const model = $("#stream-model").value.trim();
    showStreamMessage(null);
    if (!url || !model) {
      return showStreamMessage("error", "Give the stream's URL and the model that reads it.");
    }
    button.disabled = true;
    try {
      const maxFps = $("#stream-max-fps");
      if (maxFps.validity.badInput) throw new Error("Max fps: expected a number");
      const params = { track: $("#stream-track").checked };
      if (maxFps.value !== "") params.max_fps = Number(maxFps.value);
      const response = await api("/v1/streams", { method: "POST", json: { url, model, params } });
      const stream = await response.json();
      showStreamMessage("status", `Added stream ${shortId(stream.id)} (${stream.url}).`);
      $("#stream-url").value = "";
      refreshSoon();
    } catch (err) {
      const message =
        err instanceof AuthError
          ? "This server needs an API key: enter it above, then add the stream again."
          : err.message;
      showStreamMessage("error", message);
      $("#stream-error").dataset.error = err.error || "";
    } finally {
      button.disabled = false;
    }
  }

  // --- the submit form ----------------------------------------------------------------

  function showFormMessage(kind, message) {
    const error = $("#submit-error");
    const status = $("#submit-status");
    error.hidden = kind !== "error";
    status.hidden = kind !== "status";
    error.textContent = kind === "error" ? message : "";
    status.textContent = kind === "status" ? message : "";
  }

  function numberField(input, label) {
    if (input.validity.badInput) throw new Error(`${label}: expected a whole number`);
    return input.value === "" ? undefined : Number(input.value);
  }

  async function submitJob(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const button = $("#submit-button");
    const path = $("#input-path").value.trim();
    const file = $("#input-file").files[0];
    showFormMessage(null);
    if (path && file) {
      return showFormMessage("error", "Give an input path or a file to upload, not both.");
    }
    if (!path && !file) {
      const why = "Give an input path on the server, or choose a file to upload.";
      return showFormMessage("error", why);
    }
    button.disabled = true;
    try {
      const params = {};
      const model = $("#model").value.trim();
      if (model) params.model = model;
      const scale = numberField($("#scale"), "Scale");
      if (scale !== undefined) params.scale = scale;
      const priority = numberField($("#priority"), "Priority");
      const request = { params, priority: priority === undefined ? 0 : priority };
      if (file) {
        button.textContent = "Uploading…";
        const uploaded = await upload(file, (done) => {
          button.textContent = `Uploading ${Math.round(done * 100)} %`;
        });
        request.upload_id = uploaded.upload_id;
      } else {
        request.input = path;
      }
      button.textContent = "Submitting…";
      const response = await api("/v1/jobs", { method: "POST", json: request });
      const job = await response.json();
      showFormMessage("status", `Queued job ${shortId(job.id)} (${basename(job.input)}).`);
      $("#input-path").value = "";
      $("#input-file").value = "";
      refreshSoon();
    } catch (err) {
      const message =
        err instanceof AuthError
          ? "This server needs an API key: enter it above, then submit again."
          : err.message;
      showFormMessage("error", message);
      form.querySelector(".form-error").dataset.error = err.error || "";
    } finally {
      button.disabled = false;
      button.textContent = "Submit";
    }
  }

  // --- the key form -------------------------------------------------------------------

  function needKey(hadKey) {
    const panel = $("#auth");
    if (!panel.hidden) return; // already asking; leave what the user typed alone
    setText(
      $("#key-message"),
      hadKey
        ? "The server did not accept the stored API key. Enter the right one."
        : "This server needs an API key."
    );
    panel.hidden = false;
    $("#api-key").focus();
  }

  function openKeyForm() {
    setText(
      $("#key-message"),
      apiKey()
        ? "An API key is stored in this browser. Enter a new one, or forget it."
        : "No API key is stored. Enter one if the server needs it."
    );
    $("#auth").hidden = false;
    $("#api-key").focus();
  }

  function useKey(event) {
    event.preventDefault();
    const input = $("#api-key");
    setApiKey(input.value.trim());
    input.value = "";
    $("#auth").hidden = true;
    refreshSoon();
  }

  function forgetKey() {
    setApiKey("");
    closeDocsSession();
    $("#api-key").value = "";
    setText($("#key-message"), "The API key was forgotten.");
    refreshSoon();
  }

  // --- the refresh loop ---------------------------------------------------------------

  let timer = null;
  let running = false;
  let again = false;

  function schedule(delayMs) {
    clearTimeout(timer);
    timer = setTimeout(refresh, delayMs);
  }

  function refreshSoon() {
    if (running) again = true;
    else schedule(0);
  }

  async function refresh() {
    running = true;
    try {
      const [, devices, jobs, streams] = await Promise.allSettled([
        refreshHealth(),
        api("/v1/devices").then((r) => r.json()),
        api(`/v1/jobs?limit=${JOB_LIMIT}`).then((r) => r.json()),
        api("/v1/streams").then((r) => r.json()),
      ]);
      if (devices.status === "fulfilled") renderDevices(devices.value);
      if (streams.status === "fulfilled") renderStreams(streams.value);
      if (jobs.status === "fulfilled") {
        renderJobs(jobs.value);
        openDocsSession(apiKey()); // the key works: let the docs link use it too
      }
      const failed = [devices, jobs, streams].find((r) => r.status === "rejected");
      if (failed) {
        const auth = failed.reason instanceof AuthError;
        if (auth && !$("#devices .device")) {
          const hint = el("p", "muted empty", "Enter the API key to see the devices.");
          $("#devices").replaceChildren(hint);
        }
        const why = auth ? "waiting for the API key" : `update failed: ${failed.reason.message}`;
        setText($("#updated"), why);
      } else {
        setText($("#updated"), `updated ${new Date().toLocaleTimeString()}`);
      }
    } catch (err) {
      setText($("#updated"), `update failed: ${err.message}`);
    } finally {
      running = false;
      const next = again ? 0 : document.hidden ? HIDDEN_REFRESH_MS : REFRESH_MS;
      again = false;
      schedule(next);
    }
  }

  function start() {
    $("#submit-form").addEventListener("submit", submitJob);
    $("#stream-form").addEventListener("submit", addStream);
    $("#streams").addEventListener("click", (event) => {
      const stop = event.target.closest("button.stop");
      if (stop) stopStream(stop);
    });
    $("#key-form").addEventListener("submit", useKey);
    $("#key-forget").addEventListener("click", forgetKey);
    $("#key-close").addEventListener("click", () => {
      $("#auth").hidden = true;
    });
    $("#key-button").addEventListener("click", openKeyForm);
    $("#jobs tbody").addEventListener("click", (event) => {
      const cancel = event.target.closest("button.cancel");
      if (cancel) return void cancelJob(cancel);
      const link = event.target.closest("a.download");
      if (link && apiKey()) {
        event.preventDefault();
        download(link);
      }
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refreshSoon();
    });
    refresh();
  }

  start();
})();
