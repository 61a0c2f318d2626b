// carfriend relay service worker: shows the car's messages as notifications (Web Push), opens
// the conversation on a tap, and sends an answer from a notification's button without opening
// the page (the notification carries a token that stands for the page's CSRF token).
"use strict";

const ICON = "/static/icon-192.png";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function showMessage(data) {
  const options = { body: data.body || "", tag: data.tag, data, icon: ICON, badge: ICON,
    requireInteraction: data.severity === "critical" };
  if (Array.isArray(data.actions) && data.token) options.actions = data.actions.slice(0, 2);
  return self.registration.showNotification(data.title || "carfriend", options);
}

self.addEventListener("push", (event) => {
  let data;
  try {
    data = event.data ? event.data.json() : {};
  } catch (e) {
    data = { body: event.data ? event.data.text() : "" };
  }
  event.waitUntil(showMessage(data));
});

async function openConversation(url) {
  const target = new URL(url || "/", self.location.origin);
  if (target.origin !== self.location.origin) return null;  // only our own pages
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  for (const client of windows) {
    if (new URL(client.url).pathname === target.pathname) {
      await client.focus();
      return client.navigate ? client.navigate(target.href) : client;
    }
  }
  return self.clients.openWindow(target.href);
}

async function sendAnswer(data, answer) {
  const response = await fetch("/push/action", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ token: data.token, answer }),
  });
  return response.json().catch(() => ({ ok: false, error: "The relay did not answer." }));
}

// A tap opens the conversation; an answer button sends the answer and says so (or, when that
// fails, e.g. logged out, opens the conversation to answer there).
async function handleClick(data, action) {
  if (action && data.token) {
    const result = await sendAnswer(data, action).catch(() => ({ ok: false }));
    if (result.ok) {
      const label = (data.actions || []).find((a) => a.action === action)?.title || action;
      await self.registration.showNotification(data.title || "carfriend",
        { body: `You answered: ${label}`, tag: data.tag, icon: ICON, data: { url: data.url } });
      return result;
    }
  }
  await openConversation(data.url);
  return { ok: false, opened: true };
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(handleClick(event.notification.data || {}, event.action));
});
