// converge's status page, live: on each event from /api/events the page's own
// <main> is fetched again (?fragment) and swapped in, so a sync, a drift or a
// health change shows without a reload. Without this script the page still
// works: links, and a <noscript> refresh every 10 s.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  var url = main && main.getAttribute("data-fragment");
  if (!url || !window.EventSource || !window.fetch) { return; }
  var busy = false;
  var again = false;

  // The same rule as the server's view::ago.
  function ago(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 5) { return "just now"; }
    if (s < 60) { return s + " s ago"; }
    if (s < 3600) { return Math.floor(s / 60) + " min ago"; }
    if (s < 86400) { return Math.floor(s / 3600) + " h ago"; }
    return Math.floor(s / 86400) + " d ago";
  }

  function tick() {
    var times = main.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var at = Date.parse(times[i].getAttribute("datetime"));
      if (!isNaN(at)) { times[i].textContent = ago(Date.now() - at); }
    }
  }

  function state(text, on) {
    if (!live) { return; }
    live.textContent = text;
    live.className = "live " + (on ? "on" : "off");
  }

  // A <details> the reader closed stays closed across a swap.
  function closedKeys() {
    var keys = {};
    var all = main.querySelectorAll("details[data-key]");
    for (var i = 0; i < all.length; i++) {
      if (!all[i].open) { keys[all[i].getAttribute("data-key")] = true; }
    }
    return keys;
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        var closed = closedKeys();
        main.innerHTML = html;
        var all = main.querySelectorAll("details[data-key]");
        for (var i = 0; i < all.length; i++) {
          if (closed[all[i].getAttribute("data-key")]) { all[i].open = false; }
        }
        tick();
        document.body.setAttribute("data-updated", String(Date.now()));
      })
      .catch(function (error) { state("update failed: " + error.message, false); })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  var events = new EventSource("/api/events");
  events.addEventListener("open", function () { state("live", true); });
  events.addEventListener("changed", refresh);
  events.addEventListener("error", function () { state("reconnecting…", false); });
  setInterval(tick, 5000);
})();
