// balsam web: keep the page's live part current without reloading it.
// The server's event stream says which tables changed; when one this page shows (data-watch)
// changes, the live part is fetched again (X-Balsam-Fragment) and swapped in. At most one fetch
// runs at a time, and the next one starts no sooner than max(0.5 s, the last one's duration)
// after it, so a page never keeps the server busy more than half of the time. Without the stream (or without
// notifications from the database) the page polls every 5 s. Every page also refreshes itself
// every data-every ms, so ages and heartbeats stay current when nothing is written.
(function () {
  "use strict";
  const body = document.body;
  const watch = new Set((body.dataset.watch || "").split(" ").filter(Boolean));
  const every = Number(body.dataset.every || 0);
  const live = document.getElementById("live");
  const status = document.getElementById("status");
  const updated = document.getElementById("updated");
  const notice = document.getElementById("notice");
  if (!live || !status) return;
  let busy = false, pending = false, lastCost = 0, lastDone = 0, timer = null, poller = null;
  let down = false;  // the stream or the notifications were lost: catch up when they return

  function setStatus(text, cls) {
    status.textContent = text;
    status.className = "status " + cls;
  }
  function say(text) {
    notice.hidden = !text;
    notice.textContent = text || "";
  }
  function schedule(ms) {
    if (timer === null) timer = setTimeout(() => { timer = null; refresh(); }, ms);
  }
  function refresh() {
    if (busy) { pending = true; return; }
    const wait = lastDone + Math.max(500, lastCost) - performance.now();
    if (wait > 0) { schedule(wait); return; }
    busy = true;
    const start = performance.now();
    fetch(location.href, {headers: {"X-Balsam-Fragment": "1"}, credentials: "same-origin",
                          cache: "no-store"})
      .then((r) => r.text().then((text) => ({r, text})))
      .then(({r, text}) => {
        if (r.ok) {
          live.innerHTML = text;
          say("");
          updated.textContent = "updated " + new Date().toLocaleTimeString();
          body.dataset.version = String(Number(body.dataset.version || 0) + 1);
        } else if (r.status === 403) {
          say("The server no longer accepts this page's token: open the URL that 'balsam web' printed.");
        } else {
          const doc = new DOMParser().parseFromString(text, "text/html");
          const why = doc.getElementById("error-message");
          say("Not updated: " + (why ? why.textContent : "HTTP " + r.status));
        }
      })
      .catch(() => say("Not updated: the server does not answer."))
      .finally(() => {
        busy = false;
        lastDone = performance.now();
        lastCost = lastDone - start;
        if (pending) { pending = false; refresh(); }
      });
  }
  function poll(on) {
    if (on && poller === null) poller = setInterval(refresh, 5000);
    if (!on && poller !== null) { clearInterval(poller); poller = null; }
  }
  const source = new EventSource("/events");
  source.addEventListener("status", (e) => {
    const data = JSON.parse(e.data);
    setStatus(data.live ? "live" : "polling", data.live ? "live" : "polling");
    poll(!data.live);
    if (data.live && down) refresh();
    down = !data.live;
  });
  source.addEventListener("change", (e) => {
    const data = JSON.parse(e.data);
    if (data.tables.some((t) => watch.has(t))) refresh();
  });
  source.onerror = () => { down = true; setStatus("polling", "polling"); poll(true); };
  if (every > 0) setInterval(refresh, every);
  window.addEventListener("pagehide", () => source.close());
})();
