// The page's link to TensorBoard's own window (the iframe's parent), for TensorBoard's conventions.
//
// Messages: TensorBoard 2.21's plugin API, as its bundled index.js implements it. The page posts
// "experimental.bootstrap" to its parent with a MessagePort; on that port both sides send JSON
// strings {type, id, payload, error, isReply} and answer each request with isReply: true. The host
// answers "experimental.GetRuns" (run names) and "experimental.GetURLPluginData" ({pluginName} ->
// the "p.<plugin>.<key>" entries of its URL hash), and sends "experimental.RunsChanged" (run
// names) and "experimental.DataReloaded" (after its reload button or its auto-reload).
//
// Dark mode and URL state have no working message in 2.21: the host toggles the class
// "dark-mode" on its <body>, and keeps its hash through window.tensorboard.tf_storage. The
// iframe is same-origin (TensorBoard serves both), so those are read and written directly; when
// they cannot be (another origin, no parent), the page falls back to the browser's colour scheme
// and its own state.

const PREFIX = "p.saliency.";

/** TensorBoard's default palette for run colours (tensorboardColorBlindAssist, in run order). */
export const RUN_COLORS = ["#ff7043", "#0077bb", "#cc3311", "#33bbee", "#ee3377", "#009988", "#bbbbbb"];

function parentWindow() {
  try {
    return window.parent !== window && window.parent.document ? window.parent : null;
  } catch {
    return null; // another origin
  }
}

/** A connection to the host's message port: send(type, payload) -> Promise, listen(type, fn). */
export function connect() {
  const listeners = new Map();
  const waiting = new Map();
  let next = 0;
  const parent = window.parent !== window ? window.parent : null;
  const channel = parent ? new MessageChannel() : null;
  const post = (message) => channel && channel.port1.postMessage(JSON.stringify(message));
  if (channel) {
    channel.port1.onmessage = async (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      const { type, id, payload, error, isReply } = message;
      if (isReply) {
        const wait = waiting.get(id);
        waiting.delete(id);
        if (wait) (error ? wait.reject(new Error(error)) : wait.resolve(payload));
        return;
      }
      let result = null, failure = null;
      const fn = listeners.get(type);
      try {
        if (fn) result = await fn(payload);
      } catch (err) {
        failure = String(err);
      }
      post({ type, id, payload: result ?? null, error: failure, isReply: true });
    };
    parent.postMessage("experimental.bootstrap", "*", [channel.port2]);
  }
  return {
    connected: Boolean(channel),
    listen(type, fn) { listeners.set(type, fn); },
    /** Resolves with the host's answer, or with `fallback` after `ms` without one. */
    send(type, payload, { ms = 1500, fallback = null } = {}) {
      if (!channel) return Promise.resolve(fallback);
      const id = next++;
      return new Promise((resolve) => {
        const timer = setTimeout(() => { waiting.delete(id); resolve(fallback); }, ms);
        const done = (v) => { clearTimeout(timer); resolve(v); };
        waiting.set(id, { resolve: done, reject: () => done(fallback) });
        post({ type, id, payload, error: null, isReply: false });
      });
    },
  };
}

/** Whether TensorBoard shows its dark theme (or, outside TensorBoard, the browser prefers one). */
export function isDark() {
  const parent = parentWindow();
  if (parent) return parent.document.body.classList.contains("dark-mode");
  return window.matchMedia("(prefers-color-scheme: dark)").matches;
}

/** Calls `fn(dark)` whenever TensorBoard's theme changes. */
export function watchTheme(fn) {
  const parent = parentWindow();
  if (parent) {
    new parent.MutationObserver(() => fn(isDark())).observe(parent.document.body, {
      attributes: true,
      attributeFilter: ["class"],
    });
  }
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => fn(isDark()));
}

/** The page's entries of TensorBoard's URL hash ("p.saliency.<key>"), read directly. */
function readHash(parent) {
  const out = {};
  for (const part of parent.location.hash.slice(1).split("&")) {
    const [k, v] = part.split("=");
    if (v !== undefined && decodeURIComponent(k).startsWith(PREFIX)) {
      out[decodeURIComponent(k).slice(PREFIX.length)] = decodeURIComponent(v);
    }
  }
  return out;
}

/** The page's URL state: the hash's "p.saliency.*" entries, and what
 * experimental.GetURLPluginData answers (in tensorboard 2.21 it reads a copy of the hash that
 * its Angular app does not keep: it answered {} for a URL holding p.saliency.cmap=viridis). */
export async function readUrlState(host) {
  const data = await host.send("experimental.GetURLPluginData", { pluginName: "saliency" });
  const parent = parentWindow();
  return { ...(parent ? readHash(parent) : {}), ...(data && typeof data === "object" ? data : {}) };
}

/** Writes `key=value` into TensorBoard's URL hash as "p.saliency.<key>" (replacing, not adding
 * a history entry); an empty value removes it. */
export function writeUrlState(key, value) {
  const parent = parentWindow();
  if (!parent) return;
  const storage = parent.tensorboard && parent.tensorboard.tf_storage;
  const text = value === null || value === undefined ? "" : String(value);
  if (storage && storage.setString) {
    storage.setString(PREFIX + key, text, { useLocationReplace: true });
    return;
  }
  const parts = parent.location.hash.slice(1).split("&").filter((p) => p && !p.startsWith(encodeURIComponent(PREFIX + key) + "="));
  if (text) parts.push(`${encodeURIComponent(PREFIX + key)}=${encodeURIComponent(text)}`);
  const url = new URL(parent.location.href);
  url.hash = parts.join("&");
  parent.history.replaceState(parent.history.state, "", url.toString());
}
