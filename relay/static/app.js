// carfriend relay: live timeline (server-sent events), answer buttons without a page reload,
// and times shown in the reader's own time zone. Works without this file too (plain forms).
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const d = new Date(el.getAttribute("datetime"));
    if (!isNaN(d)) el.textContent = d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }
}

// Chart axis labels are rendered in UTC; show them in the reader's time zone.
function localAxes(root) {
  for (const el of root.querySelectorAll("svg text[data-ts]")) {
    const d = new Date(el.getAttribute("data-ts"));
    if (isNaN(d)) continue;
    if (el.dataset.fmt === "time") {
      el.textContent = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    } else if (d.getHours() === 0) {  // day ticks are UTC midnights: local only where that is
      el.textContent = d.toLocaleDateString([], { weekday: "short" });
    }
  }
}

function fragment(html) {
  const t = document.createElement("template");
  t.innerHTML = html.trim();  // server-rendered and escaped by the relay's templates
  localTimes(t.content);
  return t.content.firstElementChild;
}

function csrf() { return document.querySelector('meta[name="csrf"]').content; }

function scrollToEnd() { window.scrollTo({ top: document.body.scrollHeight }); }

function placeCommand(html, messageId) {
  const el = fragment(html);
  const old = document.getElementById(el.id);
  if (old) { old.replaceWith(el); return; }
  document.getElementById("timeline").append(el);
  if (messageId) hideAnswers(messageId);
  scrollToEnd();
}

function hideAnswers(messageId) {
  for (const m of document.querySelectorAll("[data-message-id]")) {
    if (m.dataset.messageId === messageId) m.querySelector(".answers")?.remove();
  }
}

function liveTimeline(tl) {
  const source = new EventSource(tl.dataset.events);
  source.addEventListener("item", (e) => {
    const el = fragment(e.data);
    if (document.getElementById(el.id)) return;
    tl.querySelector(".empty")?.remove();
    tl.append(el);
    scrollToEnd();
  });
  source.addEventListener("command", (e) => {
    const c = JSON.parse(e.data);
    placeCommand(c.html, c.message_id);
  });
  source.addEventListener("state", (e) => {
    document.getElementById("state")?.replaceWith(fragment(e.data));
  });
  // The server ends the stream when access ends (logout, password change, role revoked).
  source.addEventListener("end", () => source.close());
}

function liveFleet(section) {
  const source = new EventSource(section.dataset.events);
  source.addEventListener("fleet", (e) => {
    document.getElementById("fleet-table")?.replaceWith(fragment(e.data));
  });
  source.addEventListener("end", () => source.close());
}

async function post(form, submitter) {
  const err = document.getElementById("post-error");
  const data = new FormData(form);
  data.set("csrf", csrf());
  for (const b of form.querySelectorAll("button")) b.disabled = true;
  try {
    const r = await fetch(form.action, { method: "POST", body: new URLSearchParams(data),
      headers: { Accept: "application/json" }, credentials: "same-origin" });
    const body = await r.json().catch(() => ({ ok: false, error: "The relay did not answer." }));
    if (!body.ok) throw new Error(body.error || "Could not send.");
    if (err) err.hidden = true;
    if (body.html) placeCommand(body.html, data.get("message_id"));
  } catch (e) {
    if (err) { err.textContent = e.message; err.hidden = false; }
  } finally {
    for (const b of form.querySelectorAll("button")) b.disabled = false;
  }
}

document.addEventListener("submit", (e) => {
  const form = e.target.closest("form.js-post");
  if (!form) return;
  e.preventDefault();
  post(form, e.submitter);
});

// Web Push: the service worker, and the "Notify me" button of the settings page.
function keyBytes(b64url) {
  const b64 = b64url.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((b64url.length + 3) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

async function postJSON(url, body) {
  const r = await fetch(url, { method: "POST", credentials: "same-origin", body: JSON.stringify(body),
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf() } });
  const answer = await r.json().catch(() => ({ ok: false, error: "The relay did not answer." }));
  if (!answer.ok) throw new Error(answer.error || "The relay refused.");
  return answer;
}

async function setUpPush() {
  const key = document.querySelector('meta[name="vapid-key"]')?.content;
  if (!key || !("serviceWorker" in navigator)) return;
  const reg = await navigator.serviceWorker.register("/sw.js");
  const button = document.getElementById("notify-me");
  if (!button) return;
  const status = document.getElementById("push-status");
  const error = document.getElementById("push-error");
  if (!("PushManager" in window) || !("Notification" in window)) {
    status.textContent = "This browser cannot show notifications from a web app. On an iPhone, add carfriend to the home screen first.";
    return;
  }
  let sub = await reg.pushManager.getSubscription();
  const show = () => {
    const on = sub && Notification.permission === "granted";
    button.textContent = on ? "Stop notifications on this device" : "Notify me";
    button.dataset.state = on ? "on" : "off";
    if (on) status.textContent = "This device gets notifications.";
  };
  show();
  button.hidden = false;
  button.addEventListener("click", async () => {
    error.hidden = true;
    button.disabled = true;
    try {
      if (button.dataset.state === "on") {
        await postJSON("/push/unsubscribe", { endpoint: sub.endpoint });
        await sub.unsubscribe();
        sub = null;
        status.textContent = "This device no longer gets notifications.";
      } else {
        if (await Notification.requestPermission() !== "granted") {
          throw new Error("Notifications are blocked for this site: allow them in the browser's site settings.");
        }
        sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key) })
          .catch((e) => { throw new Error(`This browser could not reach its push service (${e.message}).`); });
        await postJSON("/push/subscribe", sub.toJSON());
      }
      show();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpPush().catch((e) => console.warn("push set-up:", e.message));
  localTimes(document);
  localAxes(document);
  const tl = document.getElementById("timeline");
  if (tl?.dataset.events) { liveTimeline(tl); scrollToEnd(); }
  const fleet = document.getElementById("fleet");
  if (fleet?.dataset.events) liveFleet(fleet);
});
