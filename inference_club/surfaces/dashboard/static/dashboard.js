// inference-club dashboard: the few live and interactive parts of server-rendered pages.
// Every call goes to the hub's own /dashboard/api routes with the session cookie and the
// page's CSRF token; nothing is loaded from anywhere else. Text is always set with
// textContent, never parsed as HTML.
"use strict";

const API = "/dashboard/api";
const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

async function api(method, path, body) {
  const init = { method, headers: { "x-csrf-token": csrf() }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(errorMessage(data, response.status));
  return data;
}

function errorMessage(data, status) {
  if (data && data.error && data.error.message) return data.error.message;
  if (data && typeof data.detail === "string") return data.detail;
  return `Request failed (${status}).`;
}

function notice(text, isError) {
  const box = document.getElementById("notice");
  if (!box) return;
  box.textContent = text;
  box.classList.toggle("error", Boolean(isError));
  box.hidden = !text;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ---------------------------------------------------------------- time, copy

function formatTimes(root) {
  for (const node of (root || document).querySelectorAll("time[data-unix]")) {
    const seconds = Number(node.dataset.unix);
    if (!seconds) continue;
    const date = new Date(seconds * 1000);
    node.dateTime = date.toISOString();
    node.textContent = date.toLocaleString();
  }
}

function timeNode(seconds) {
  if (!seconds) return document.createTextNode("never");
  const node = el("time", { "data-unix": String(seconds) });
  formatTimes(el("span", {}, node));
  return node;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  } catch {
    notice("Copy failed: select the text and copy it by hand.", true);
  }
}

function wireCopyButtons() {
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.copy");
    if (button) copyText(document.getElementById(button.dataset.copy).textContent, button);
    const inputCopy = event.target.closest("button.copy-input");
    if (inputCopy) copyText(inputCopy.parentElement.querySelector("input").value, inputCopy);
  });
}

// ---------------------------------------------------------------- live machines and jobs

function machineRow(m) {
  const services = el("ul", { class: "plain" });
  for (const s of m.services) {
    services.append(el("li", {}, el("strong", { text: s.type }),
      ` ${s.engine} · ${s.in_use}/${s.max_concurrency} in use · ${s.models.join(", ")}`));
  }
  return el("tr", { "data-provider": m.id },
    el("th", { scope: "row", text: m.name }),
    el("td", {}, el("span", { class: "dot " + (m.online ? "on" : "off") }),
      el("span", { class: "state", text: m.online ? "online" : "offline" })),
    el("td", { text: m.transport }),
    el("td", { text: m.version || "–" }),
    el("td", {}, timeNode(m.last_seen)),
    el("td", {}, services));
}

function followLive() {
  const rows = document.getElementById("machine-rows");
  const stateLabel = document.getElementById("live-state");
  const source = new EventSource(API + "/live");
  source.addEventListener("open", () => { if (stateLabel) stateLabel.textContent = "live"; });
  source.addEventListener("error", () => { if (stateLabel) stateLabel.textContent = "reconnecting…"; });
  source.addEventListener("state", (event) => {
    const state = JSON.parse(event.data);
    if (rows) {
      rows.replaceChildren(...state.machines.map(machineRow));
      const empty = document.getElementById("no-machines");
      if (empty) empty.hidden = state.machines.length > 0;
    }
    const set = (id, value) => { const node = document.getElementById(id); if (node) node.textContent = value; };
    set("machines-online", state.machines.filter((m) => m.online).length);
    set("machines-total", state.machines.length);
    if (state.jobs && state.jobs.counts) {
      set("jobs-queued", state.jobs.counts.QUEUED);
      set("jobs-running", state.jobs.counts.PROCESSING);
    }
  });
  window.addEventListener("pagehide", () => source.close());
}

// ---------------------------------------------------------------- Settings → Token

function sdkSnippet(hub, key) {
  return [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url="${hub}/v1", api_key="${key}")`,
    "print([m.id for m in client.models.list()])",
  ].join("\n");
}

function initToken() {
  const form = document.getElementById("key-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = document.getElementById("key-name").value.trim();
    try {
      const created = await api("POST", "/keys", { name });
      const snippet = document.getElementById("new-key-snippet");
      document.getElementById("new-key-value").textContent = created.key;
      snippet.textContent = sdkSnippet(snippet.dataset.hub, created.key);
      document.getElementById("new-key").hidden = false;
      document.getElementById("key-rows").prepend(keyRow(created));
      form.reset();
      notice(`Key “${created.name}” created.`);
    } catch (error) {
      notice(error.message, true);
    }
  });
  document.getElementById("key-rows").addEventListener("click", async (event) => {
    const button = event.target.closest("button.revoke");
    if (!button) return;
    if (!window.confirm(`Revoke the key “${button.dataset.name}”? Programs using it stop working.`)) return;
    try {
      await api("DELETE", `/keys/${encodeURIComponent(button.dataset.key)}`);
      const row = button.closest("tr");
      row.querySelector(".state").textContent = "revoked";
      button.remove();
      notice("Key revoked.");
    } catch (error) {
      notice(error.message, true);
    }
  });
}

function keyRow(k) {
  const revoke = el("button", { type: "button", class: "danger revoke", "data-key": k.id, "data-name": k.name,
    text: "Revoke" });
  return el("tr", { "data-key": k.id },
    el("th", { scope: "row", text: k.name }),
    el("td", {}, el("code", { text: `${k.prefix}…` })),
    el("td", {}, timeNode(k.created_at)),
    el("td", {}, timeNode(k.last_used_at)),
    el("td", { class: "state", text: "active" }),
    el("td", {}, revoke));
}

// ---------------------------------------------------------------- Machines: connect panel

function initMachines() {
  followLive();
  const command = document.getElementById("connect-command");
  const name = document.getElementById("machine-name");
  const service = document.getElementById("machine-service");
  let key = "<KEY>";
  const render = () => {
    command.textContent = `inference-club agent --hub ${command.dataset.hub} --key ${key} ` +
      `--name ${name.value || "home-rig"} --service ${service.value || "llm=http://127.0.0.1:11434/v1"}`;
  };
  name.addEventListener("input", render);
  service.addEventListener("input", render);
  document.getElementById("connect-key").addEventListener("click", async () => {
    try {
      const created = await api("POST", "/keys", { name: `agent ${name.value || "home-rig"}` });
      key = created.key;
      render();
      notice("A new key for this machine is in the command; it is shown only now.");
    } catch (error) {
      notice(error.message, true);
    }
  });
}

// ---------------------------------------------------------------- Jobs and batches

function initJob() {
  const box = document.getElementById("job");
  const id = box.dataset.job;
  let source = null;
  let leaving = false;
  // Both the action's answer and the job's status event may ask for a reload; a second
  // reload would abort the first, so only one happens.
  const reloadOnce = () => {
    if (leaving) return;
    leaving = true;
    if (source) source.close();
    window.location.reload();
  };
  const act = async (action) => {
    try {
      await api("POST", `/jobs/${encodeURIComponent(id)}/${action}`);
      reloadOnce();
    } catch (error) {
      notice(error.message, true);
    }
  };
  const cancel = document.getElementById("job-cancel");
  if (cancel) cancel.addEventListener("click", () => act("cancel"));
  const retry = document.getElementById("job-retry");
  if (retry) retry.addEventListener("click", () => act("retry"));
  if (!["QUEUED", "PROCESSING"].includes(box.dataset.status)) return;
  source = new EventSource(`${API}/jobs/${encodeURIComponent(id)}/events`);
  source.addEventListener("status", (event) => {
    const job = JSON.parse(event.data);
    setStatus(document.getElementById("job-status"), job.status);
    if (!["QUEUED", "PROCESSING"].includes(job.status)) reloadOnce(); // the finished page renders the result
  });
  window.addEventListener("pagehide", () => source.close());
}

function setStatus(container, status) {
  if (!container) return;
  container.replaceChildren(el("span", { class: `status status-${status.toLowerCase()}`, text: status }));
}

function initBatch() {
  const box = document.getElementById("batch");
  const id = box.dataset.batch;
  const cancel = document.getElementById("batch-cancel");
  if (cancel) {
    cancel.addEventListener("click", async () => {
      try {
        await api("POST", `/batches/${encodeURIComponent(id)}/cancel`);
        notice("Canceled the batch's remaining jobs.");
      } catch (error) {
        notice(error.message, true);
      }
    });
  }
  const source = new EventSource(`${API}/batches/${encodeURIComponent(id)}/events`);
  source.addEventListener("batch", (event) => {
    const batch = JSON.parse(event.data);
    for (const name of ["total", "queued", "processing", "processed", "failed", "canceled"]) {
      document.getElementById(`count-${name}`).textContent = batch[name];
    }
    document.getElementById("batch-progress").value = batch.processed + batch.failed + batch.canceled;
    setStatus(document.getElementById("batch-status"), batch.status);
    for (const job of batch.jobs || []) {
      const row = document.querySelector(`tr[data-job="${CSS.escape(job.id)}"] .job-status`);
      setStatus(row, job.status);
    }
    if (batch.status === "DONE") {
      source.close();
      if (cancel) cancel.remove();
    }
  });
  window.addEventListener("pagehide", () => source.close());
}

// ---------------------------------------------------------------- Files

function initFiles() {
  document.addEventListener("click", async (event) => {
    const share = event.target.closest("button.share");
    const remove = event.target.closest("button.delete");
    try {
      if (share) {
        const card = share.closest(".file");
        const link = await api("POST", `/files/${encodeURIComponent(share.dataset.file)}/share`,
          { expires_in: 86400 });
        card.querySelector(".share-url").value = link.url;
        card.querySelector(".share-out").hidden = false;
      } else if (remove) {
        if (!window.confirm(`Delete ${remove.dataset.name}? This cannot be undone.`)) return;
        await api("DELETE", `/files/${encodeURIComponent(remove.dataset.file)}`);
        if (remove.dataset.after) {
          window.location.assign(remove.dataset.after);
          return;
        }
        remove.closest(".file").remove();
        notice("File deleted.");
      }
    } catch (error) {
      notice(error.message, true);
    }
  });
}

// ---------------------------------------------------------------- Playground

async function postInference(path, body, signal) {
  return fetch(API + path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": csrf() },
    body: JSON.stringify(body),
    signal,
  });
}

async function failure(response) {
  const data = await response.json().catch(() => ({}));
  return new Error(errorMessage(data, response.status));
}

function initPlayground() {
  const history = [];
  const log = document.getElementById("chat-log");
  const stop = document.getElementById("chat-stop");
  let controller = null;
  stop.addEventListener("click", () => controller && controller.abort());
  document.getElementById("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("chat-input");
    const text = input.value.trim();
    if (!text) return;
    history.push({ role: "user", content: text });
    log.append(el("p", { class: "msg user" }, el("strong", { text: "You: " }), text));
    const reply = el("span", { class: "reply" });
    log.append(el("p", { class: "msg assistant" }, el("strong", { text: "Model: " }), reply));
    input.value = "";
    controller = new AbortController();
    stop.disabled = false;
    try {
      const response = await postInference("/v1/chat/completions",
        { model: document.getElementById("chat-model").value, messages: history, stream: true },
        controller.signal);
      if (!response.ok) throw await failure(response);
      await readStream(response, (delta) => { reply.textContent += delta; });
      history.push({ role: "assistant", content: reply.textContent });
    } catch (error) {
      if (error.name !== "AbortError") notice(error.message, true);
    } finally {
      stop.disabled = true;
      controller = null;
    }
  });

  document.getElementById("image-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = document.getElementById("image-out");
    try {
      const response = await postInference("/v1/images/generations", {
        model: document.getElementById("image-model").value,
        prompt: document.getElementById("image-prompt").value,
        response_format: "b64_json",
      });
      if (!response.ok) throw await failure(response);
      const answer = await response.json();
      out.replaceChildren(...answer.data.filter((item) => item.b64_json).map((item, i) =>
        el("img", { src: `data:image/png;base64,${item.b64_json}`, alt: `Generated image ${i + 1}` })));
    } catch (error) {
      notice(error.message, true);
    }
  });

  document.getElementById("speech-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = document.getElementById("speech-out");
    try {
      const response = await postInference("/v1/audio/speech", {
        model: document.getElementById("speech-model").value,
        input: document.getElementById("speech-input").value,
      });
      if (!response.ok) throw await failure(response);
      const url = URL.createObjectURL(await response.blob());
      out.replaceChildren(el("audio", { controls: "", src: url, "aria-label": "Generated speech" }));
    } catch (error) {
      notice(error.message, true);
    }
  });
}

// Reads an OpenAI server-sent event stream and hands each content delta to onDelta.
async function readStream(response, onDelta) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message || "The stream failed.");
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && typeof delta.content === "string") onDelta(delta.content);
      }
    }
  }
}

// ---------------------------------------------------------------- Admin

function showInvite(invite) {
  document.getElementById("invite-user").textContent = invite.user.username;
  document.getElementById("invite-expires").replaceChildren(timeNode(invite.expires_at));
  document.getElementById("invite-url").textContent = invite.url;
  document.getElementById("invite-out").hidden = false;
}

function initAdmin() {
  document.getElementById("user-rows").addEventListener("click", async (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const id = encodeURIComponent(button.dataset.user);
    try {
      if (button.classList.contains("invite")) {
        showInvite(await api("POST", `/admin/users/${id}/invite`));
      } else if (button.classList.contains("disable")) {
        if (!window.confirm(`Disable ${button.dataset.name}? Their keys stop working too.`)) return;
        await api("POST", `/admin/users/${id}/disable`);
        window.location.reload();
      } else if (button.classList.contains("enable")) {
        await api("POST", `/admin/users/${id}/enable`);
        window.location.reload();
      }
    } catch (error) {
      notice(error.message, true);
    }
  });
  document.getElementById("user-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const user = await api("POST", "/admin/users", {
        username: document.getElementById("new-username").value.trim(),
        is_admin: document.getElementById("new-admin").checked,
      });
      showInvite(await api("POST", `/admin/users/${encodeURIComponent(user.id)}/invite`));
      notice(`Created ${user.username}. Send them the invite link.`);
      event.target.reset();
    } catch (error) {
      notice(error.message, true);
    }
  });
}

// ---------------------------------------------------------------- Workflow runs

function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function mediaNode(file) {
  if (file.kind === "image") return el("img", { src: file.src, alt: `Output of ${file.step_id}`, loading: "lazy" });
  if (file.kind === "audio") return el("audio", { controls: "", preload: "metadata", src: file.src,
    "aria-label": `Audio from ${file.step_id}` });
  if (file.kind === "video") return el("video", { controls: "", preload: "metadata", src: file.src,
    "aria-label": `Video from ${file.step_id}` });
  return el("a", { href: file.src, download: "", text: `Download ${file.content_type}` });
}

function gateProposal(run, step) {
  const outputs = {};
  for (const dep of step.depends_on) {
    const done = run.context && run.context.steps && run.context.steps[dep];
    if (done) outputs[dep] = done.output;
  }
  return step.depends_on.length ? outputs : { approved: true };
}

function stepItem(run, step, onAction) {
  const item = el("li", { id: `step-${step.id}`, "data-step": step.id });
  const badge = el("span", { class: `status status-${step.status.toLowerCase()}`, text: step.status });
  item.append(el("h3", {}, `${step.title} `, badge));
  const facts = [step.kind, step.model, step.attempt > 1 ? `attempt ${step.attempt}` : null,
    step.timings && step.timings.run_s != null ? `${step.timings.run_s} s` : null].filter(Boolean);
  item.append(el("p", { class: "hint", text: facts.join(" · ") }));
  if (step.error) item.append(el("pre", { class: "error", text: step.error.message || pretty(step.error) }));
  const files = (run.files || []).filter((f) => f.step_id === step.id);
  if (files.length) item.append(el("div", { class: "gallery" }, ...files.map(mediaNode)));
  else if (step.output !== null && step.output !== undefined && step.status === "DONE") {
    item.append(el("details", { open: "" }, el("summary", { text: "Output" }), el("pre", { text: pretty(step.output) })));
  }
  if (step.jobs && step.jobs.length) {
    const links = el("p", { class: "hint" }, "Jobs: ");
    step.jobs.forEach((job, i) => {
      if (i) links.append(", ");
      links.append(el("a", { href: `/dashboard/jobs/${job.id}`, text: job.status.toLowerCase() }));
    });
    item.append(links);
  }
  if (step.kind === "gate" && step.status === "AWAITING") {
    const editId = `edit-${step.id}`;
    const reasonId = `reason-${step.id}`;
    const proposal = pretty(gateProposal(run, step));
    const edit = el("textarea", { id: editId, rows: "6" });
    edit.value = proposal;
    const reason = el("input", { id: reasonId, maxlength: "2000" });
    const approve = el("button", { type: "button", class: "approve", text: "Approve" });
    const reject = el("button", { type: "button", class: "danger reject", text: "Reject" });
    approve.addEventListener("click", () => {
      let body = {};
      if (edit.value.trim() !== proposal.trim()) {
        try {
          body = { edit: JSON.parse(edit.value) };
        } catch {
          notice("The edited output is not valid JSON.", true);
          return;
        }
      }
      onAction(`/steps/${encodeURIComponent(step.id)}/approve`, body);
    });
    reject.addEventListener("click", () => {
      onAction(`/steps/${encodeURIComponent(step.id)}/reject`, reason.value ? { reason: reason.value } : {});
    });
    item.append(
      el("label", { for: editId, text: "Output passed on (JSON; edit it before approving if you like)" }), edit,
      el("label", { for: reasonId, text: "Reason (if you reject)" }), reason,
      el("div", { class: "actions" }, approve, reject));
  }
  return item;
}

function initWorkflowRun() {
  const box = document.getElementById("run");
  const id = encodeURIComponent(box.dataset.run);
  const steps = document.getElementById("steps");
  let source = null;
  let pending = null;
  const act = async (path, body) => {
    try {
      render(await api("POST", `/workflows/runs/${id}${path}`, body), true);
    } catch (error) {
      notice(error.message, true);
    }
  };
  const render = (run, force) => {
    setStatus(document.getElementById("run-status"), run.status);
    const error = document.getElementById("run-error");
    error.textContent = run.error ? run.error.message || pretty(run.error) : "";
    error.hidden = !run.error;
    for (const step of run.steps) {
      const node = document.querySelector(`svg.dag g[data-step="${CSS.escape(step.id)}"]`);
      if (!node) continue;
      node.setAttribute("class", `node status-${step.status.toLowerCase()}`);
      node.querySelector(".node-status").textContent = `${step.kind} · ${step.status}`;
    }
    // Keep a gate's edit box as the person left it while other steps move on.
    const typing = document.activeElement && steps.contains(document.activeElement) &&
      ["TEXTAREA", "INPUT"].includes(document.activeElement.tagName);
    if (force || !typing) steps.replaceChildren(...run.steps.map((step) => stepItem(run, step, act)));
    const cancel = document.getElementById("run-cancel");
    if (cancel && !["RUNNING", "AWAITING"].includes(run.status)) cancel.remove();
    if (["DONE", "FAILED", "CANCELED"].includes(run.status) && source) source.close();
  };
  const refresh = () => {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      try {
        render(await api("GET", `/workflows/runs/${id}`));
      } catch (error) {
        notice(error.message, true);
      }
    }, 150);
  };
  const cancel = document.getElementById("run-cancel");
  if (cancel) cancel.addEventListener("click", () => act("/cancel", {}));
  refresh();
  if (["RUNNING", "AWAITING"].includes(box.dataset.status)) {
    source = new EventSource(`${API}/workflows/runs/${id}/events`);
    for (const type of ["run", "step", "job"]) source.addEventListener(type, refresh);
    source.addEventListener("message", refresh);
    window.addEventListener("pagehide", () => source.close());
  }
}

// ---------------------------------------------------------------- start

const PAGES = {
  overview: followLive,
  token: initToken,
  machines: initMachines,
  job: initJob,
  batch: initBatch,
  files: initFiles,
  playground: initPlayground,
  admin: initAdmin,
  "workflow-run": initWorkflowRun,
};

document.addEventListener("DOMContentLoaded", () => {
  formatTimes();
  wireCopyButtons();
  const init = PAGES[document.body.dataset.page];
  if (init) init();
});
