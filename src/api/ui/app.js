// sipdns status page: sign-in, refresh, drain / enable. Hand-written, no build step.
// The token lives in sessionStorage (this tab only) and is sent only as Authorization.
"use strict";
(() => {
  const KEY = "sipdns.token";
  const EVERY = 1000; // ms between refreshes: a transition shows within 2 s
  const $ = (id) => document.getElementById(id);
  let last = "";
  let timer = 0;
  let drainTarget = "";

  const token = () => sessionStorage.getItem(KEY);
  const auth = () => ({ Authorization: "Bearer " + token() });

  function signedIn(yes, message) {
    $("signin").hidden = yes;
    $("signout").hidden = !yes;
    $("signin-error").textContent = message || "";
    if (!yes) {
      $("dash").replaceChildren();
      last = "";
    }
  }

  function setReady(ready) {
    const b = $("ready");
    b.textContent = ready ? "ready" : "not ready";
    b.className = "badge " + (ready ? "up" : "down");
  }

  function openIds() {
    return [...document.querySelectorAll("#dash details[open]")].map((d) => d.id);
  }

  async function refresh() {
    clearTimeout(timer);
    if (document.hidden) return; // a hidden tab asks nothing; visibilitychange resumes
    try {
      if (!token()) {
        const r = await fetch("/readyz", { cache: "no-store" });
        setReady(r.ok);
        signedIn(false, $("signin-error").textContent);
        return;
      }
      const r = await fetch("/api/v1/ui/dashboard", { headers: auth(), cache: "no-store" });
      if (r.status === 401) {
        sessionStorage.removeItem(KEY);
        signedIn(false, "The token was refused.");
        return;
      }
      if (!r.ok) {
        $("updated").textContent = "refresh failed: HTTP " + r.status;
        return;
      }
      const html = await r.text();
      signedIn(true);
      if (html !== last) {
        const open = openIds();
        $("dash").innerHTML = html;
        for (const id of open) {
          const d = document.getElementById(id);
          if (d) d.open = true;
        }
        last = html;
      }
      const summary = $("summary");
      if (summary) {
        setReady(summary.dataset.ready === "1");
        $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      }
    } catch (e) {
      $("updated").textContent = "cannot reach sipdns";
    } finally {
      timer = setTimeout(refresh, token() ? EVERY : 2 * EVERY);
    }
  }

  function targetPath(target, action) {
    const slash = target.lastIndexOf("/");
    const addr = encodeURIComponent(target.slice(0, slash));
    return "/api/v1/targets/" + addr + "/" + target.slice(slash + 1) + "/" + action;
  }

  async function post(path, body) {
    const headers = auth();
    if (body) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method: "POST", headers, body: body ? JSON.stringify(body) : undefined });
    if (!r.ok) {
      let msg = "HTTP " + r.status;
      try {
        const j = await r.json();
        msg = j.message || j.reason || j.error || msg;
      } catch (e) { /* not JSON */ }
      $("updated").textContent = "refused: " + msg;
    }
    await refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("signin").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token").value.trim();
      if (!t) return;
      sessionStorage.setItem(KEY, t);
      $("token").value = "";
      refresh();
    });
    $("signout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      signedIn(false);
      refresh();
    });
    $("dash").addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-target]");
      if (!b) return;
      if (b.classList.contains("enable")) {
        post(targetPath(b.dataset.target, "enable"));
      } else if (b.classList.contains("drain")) {
        drainTarget = b.dataset.target;
        $("drain-target").textContent = drainTarget;
        $("drain-note").value = "";
        $("drain-dialog").showModal();
      }
    });
    $("drain-cancel").addEventListener("click", () => $("drain-dialog").close());
    $("drain-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      $("drain-dialog").close();
      const body = { by: "status page" };
      const d = $("drain-duration").value;
      const n = $("drain-note").value.trim();
      if (d) body.duration = d;
      if (n) body.note = n;
      post(targetPath(drainTarget, "drain"), body);
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) refresh();
    });
    signedIn(!!token());
    refresh();
  });
})();
