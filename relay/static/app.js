// carfriend relay: live timeline (server-sent events), answer buttons without a page reload,
// and times shown in the reader's own time zone. Works without this file too (plain forms).
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const d = new Date(el.getAttribute("datetime"));
    if (!isNaN(d)) el.textContent = d.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
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

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  const tl = document.getElementById("timeline");
  if (tl?.dataset.events) { liveTimeline(tl); scrollToEnd(); }
  const fleet = document.getElementById("fleet");
  if (fleet?.dataset.events) liveFleet(fleet);
});
