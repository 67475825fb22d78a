// Live countdowns: every element with data-ends-at (RFC 3339, the server's end time)
// shows the time left; at zero the page reloads so the server says what happens next.
(function () {
  "use strict";
  var nodes = document.querySelectorAll("[data-ends-at]");
  if (!nodes.length) return;
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function tick() {
    var now = Date.now();
    var done = false;
    nodes.forEach(function (node) {
      var left = Math.max(0, Math.round((Date.parse(node.getAttribute("data-ends-at")) - now) / 1000));
      var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      node.textContent = (h ? h + ":" + pad(m) : m) + ":" + pad(s);
      if (left === 0) done = true;
    });
    if (done) { setTimeout(function () { location.reload(); }, 2000); return; }
    setTimeout(tick, 1000 - (now % 1000));
  }
  tick();
})();
