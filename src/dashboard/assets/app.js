// The dashboard's only script. Pages are rendered (and escaped) on the
// server; this refreshes the part marked data-refresh="<seconds>" by
// fetching the same page again and swapping in its <main>. The new markup
// is parsed into an inert document, never run, and the CSP forbids inline
// script anyway. It pauses while the tab is hidden, while a form on the
// page is being edited and while a record is expanded.
"use strict";
(function () {
  const main = document.querySelector("main[data-refresh]");
  if (!main) return;
  const seconds = Math.max(2, Number(main.dataset.refresh) || 5);
  // Typing in a form pauses refreshes for good (until the page changes);
  // a field merely focused pauses them while it has focus.
  let typed = false;
  let focused = false;
  main.addEventListener("input", () => { typed = true; });
  main.addEventListener("focusin", (e) => { focused = e.target.matches("input, textarea, select"); });
  main.addEventListener("focusout", () => { focused = false; });
  const editing = () => typed || focused;

  async function refresh() {
    if (document.hidden || editing() || main.querySelector("details[open]")) return;
    let response;
    try {
      response = await fetch(location.href, {
        headers: { "X-Airlock-Refresh": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (_) {
      document.body.classList.add("offline");
      return;
    }
    document.body.classList.remove("offline");
    if (response.redirected && new URL(response.url).pathname === "/admin/login") {
      location.href = "/admin/login";
      return;
    }
    // A refusal or failure leaves the page as it was, marked stale.
    document.body.classList.toggle("stale", !response.ok);
    if (!response.ok) return;
    const html = await response.text();
    const next = new DOMParser().parseFromString(html, "text/html").querySelector("main[data-refresh]");
    if (next && !editing()) {
      main.replaceChildren(...document.adoptNode(next).childNodes);
      main.dispatchEvent(new CustomEvent("airlock:refreshed", { bubbles: true }));
    }
  }

  setInterval(refresh, seconds * 1000);
})();
