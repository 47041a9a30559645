/* Campaign attribution: copy the visitor's utm_* parameters onto every sign-up link
   (a[data-signup]), so that the app's /signup keeps them with the new account.
   They come from this page's URL or, once the visitor browses on from a campaign page, from this
   tab's sessionStorage. No cookies, nothing sent anywhere. */
(function () {
  "use strict";
  var KEY = "vgen.utm";
  var NAME = /^utm_[a-z0-9_]{1,40}$/;
  var found = [];
  new URLSearchParams(window.location.search).forEach(function (value, key) {
    var name = key.toLowerCase();
    if (NAME.test(name) && value) found.push([name, value.slice(0, 200)]);
  });
  try {
    if (found.length) {
      window.sessionStorage.setItem(KEY, JSON.stringify(found));
    } else {
      var kept = JSON.parse(window.sessionStorage.getItem(KEY) || "[]");
      if (Array.isArray(kept)) found = kept;
    }
  } catch (e) {
    /* storage blocked or garbled: this page's own parameters still apply */
  }
  if (!found.length) return;
  var links = document.querySelectorAll("a[data-signup]");
  for (var i = 0; i < links.length; i++) {
    var url = new URL(links[i].href);
    for (var j = 0; j < found.length; j++) {
      var pair = found[j];
      if (Array.isArray(pair) && NAME.test(String(pair[0])) && typeof pair[1] === "string") {
        url.searchParams.set(pair[0], pair[1]);
      }
    }
    links[i].href = url.toString();
  }
})();
