// The dashboard's live parts, in plain JavaScript (no build step). Pages work without it.
// [data-refresh]: re-fetch that URL every data-every seconds and swap the element's content.
// [data-ends-at]: count the time left down to that instant, every second.
(function () {
  "use strict";
  function clock(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    return h > 0 ? h + ":" + two(m) + ":" + two(s) : m + ":" + two(s);
  }
  function tick() {
    document.querySelectorAll("[data-ends-at]").forEach(function (el) {
      var left = (Date.parse(el.getAttribute("data-ends-at")) - Date.now()) / 1000;
      el.textContent = clock(left);
    });
  }
  function refresh(el) {
    var every = Number(el.getAttribute("data-every") || "5") * 1000;
    setInterval(function () {
      if (document.hidden || el.contains(document.activeElement)) { return; }
      fetch(el.getAttribute("data-refresh"), { credentials: "same-origin" })
        .then(function (response) {
          // Logged out meanwhile (redirected to the login page): show that page instead.
          if (response.redirected) { window.location.reload(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) { if (html !== null) { el.innerHTML = html; tick(); } })
        .catch(function () { /* keep the last content; the next round tries again */ });
    }, every);
  }
  document.querySelectorAll("[data-refresh]").forEach(refresh);
  tick();
  setInterval(tick, 1000);
})();
