// Keyboard shortcuts of the evos console. Pages work without this file;
// it only adds keys. Loaded from /ui/assets (the CSP allows no inline code).
(function () {
  "use strict";

  function typing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.isContentEditable);
  }

  function rows() {
    var table = document.querySelector("table[data-keys=rows]");
    return table ? Array.prototype.slice.call(table.querySelectorAll("tbody tr[data-href]")) : [];
  }

  function select(list, i) {
    list.forEach(function (r) { r.classList.remove("selected"); });
    if (list[i]) {
      list[i].classList.add("selected");
      list[i].scrollIntoView({ block: "nearest" });
    }
  }

  function help() {
    var box = document.getElementById("shortcuts");
    if (box) {
      box.remove();
      return;
    }
    box = document.createElement("div");
    box.id = "shortcuts";
    var title = document.createElement("h2");
    title.textContent = "Shortcuts";
    box.appendChild(title);
    var list = document.createElement("dl");
    var keys = [["?", "this help"], ["Esc", "leave a text field"]];
    if (rows().length) {
      keys.push(["j / k", "next / previous row"], ["Enter", "open the row"]);
    }
    if (document.getElementById("comment")) {
      keys.push(["c", "write a comment"]);
    }
    document.querySelectorAll("[data-key]").forEach(function (el) {
      keys.push([el.getAttribute("data-key"), el.textContent.trim()]);
    });
    keys.forEach(function (k) {
      var dt = document.createElement("dt");
      dt.textContent = k[0];
      var dd = document.createElement("dd");
      dd.textContent = k[1];
      list.appendChild(dt);
      list.appendChild(dd);
    });
    box.appendChild(list);
    document.body.appendChild(box);
  }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) {
      return;
    }
    if (typing(document.activeElement)) {
      if (e.key === "Escape") {
        document.activeElement.blur();
      }
      return;
    }
    var list = rows();
    var at = list.findIndex(function (r) { return r.classList.contains("selected"); });
    if (e.key === "?") {
      help();
    } else if (e.key === "j" && list.length) {
      select(list, Math.min(at + 1, list.length - 1));
    } else if (e.key === "k" && list.length) {
      select(list, Math.max(at - 1, 0));
    } else if (e.key === "Enter" && at >= 0) {
      window.location.href = list[at].getAttribute("data-href");
    } else if (e.key === "c" && document.getElementById("comment")) {
      e.preventDefault();
      document.getElementById("comment").focus();
    } else {
      var target = document.querySelector('[data-key="' + (e.key.length === 1 ? e.key : "") + '"]');
      if (!target) {
        return;
      }
      e.preventDefault();
      target.click();
    }
  });
})();
