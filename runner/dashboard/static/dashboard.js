// runner dashboard: refresh the live part of a page every few seconds (no library).
// The server renders it; we fetch the same URL with X-Partial: 1 and swap it in, unless
// the user is typing in a field inside it.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var every = parseFloat(document.body.getAttribute("data-refresh") || "1") * 1000;
  var busy = false;
  function typing() {
    var el = document.activeElement;
    return el && live.contains(el) && (el.tagName === "INPUT" || el.tagName === "SELECT");
  }
  function refresh() {
    if (busy || document.hidden || typing()) { return; }
    busy = true;
    fetch(window.location.href, {headers: {"X-Partial": "1"}, credentials: "same-origin"})
      .then(function (response) {
        if (response.redirected || response.status === 401) { window.location.reload(); }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== undefined && !typing()) {
          live.innerHTML = html;
          live.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () { /* the server is restarting: try again next time */ })
      .finally(function () { busy = false; });
  }
  window.setInterval(refresh, every);
  // confirm the actions that stop something
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });
})();
