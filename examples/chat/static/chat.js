// The chat page: one EventSource on GET /chat, messages sent with POST /chat.
// The stream opens with the room's recent events; with a name (?user=), this reader is
// listed as online, and the room's join and leave events keep everyone's list.
//
// Everything other people wrote (names and messages) goes into the page through
// textContent, never innerHTML: it is shown as text and can run nothing.
"use strict";

(() => {
  const STREAM_URL = "/chat";
  const ONLINE_URL = "/chat/online";
  // Used only when the browser gives up on its EventSource (an HTTP error, a wrong
  // Content-Type); network errors and clean ends are retried by the browser itself.
  const MAX_BACKOFF_MS = 30000;

  const statusEl = document.getElementById("status");
  const statusText = document.getElementById("status-text");
  const onlineEl = document.getElementById("online");
  const usersEl = document.getElementById("users");
  const logEl = document.getElementById("log");
  const list = document.getElementById("messages");
  const emptyEl = document.getElementById("empty");
  const form = document.getElementById("composer");
  const nameInput = document.getElementById("name");
  const textInput = document.getElementById("text");
  const sendButton = document.getElementById("send");
  const formError = document.getElementById("form-error");

  let source = null;
  let hasBeenOpen = false;
  let isDown = false; // between losing the stream and getting it back
  let lastEventId = "";
  let backoff = 1000;
  let hasResetNotice = false;
  let streamUser = ""; // the name the open stream was opened with ("" for none)
  let refreshTimer = null;
  const seen = new Set(); // event ids already shown: a replay never shows one twice

  function setState(state) {
    statusEl.dataset.state = state;
    statusText.textContent = state;
  }

  function isScrolledDown() {
    return logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 40;
  }

  function append(item) {
    const stick = isScrolledDown();
    list.appendChild(item);
    emptyEl.hidden = list.querySelector(".message") !== null;
    if (stick) logEl.scrollTop = logEl.scrollHeight;
  }

  // The time the server accepted the message (its "sent" field, UTC); the time it
  // arrived here only for a message without one.
  function sentDate(message) {
    const sent = typeof message.sent === "string" ? new Date(message.sent) : null;
    return sent !== null && !Number.isNaN(sent.getTime()) ? sent : new Date();
  }

  function timeOf(date) {
    const time = document.createElement("time");
    time.dateTime = date.toISOString();
    time.textContent = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return time;
  }

  function notice(text, kind) {
    const item = document.createElement("li");
    item.className = `notice ${kind}`;
    item.textContent = text;
    append(item);
  }

  function showMessage(user, text, sent) {
    const item = document.createElement("li");
    item.className = "message";
    if (user === nameInput.value.trim()) item.classList.add("mine");
    const head = document.createElement("div");
    head.className = "meta";
    const who = document.createElement("span");
    who.className = "user";
    who.textContent = user;
    head.append(who, timeOf(sent));
    const body = document.createElement("p");
    body.className = "text";
    body.textContent = text;
    item.append(head, body);
    append(item);
  }

  function showOnline(online, users) {
    if (typeof online === "number") {
      onlineEl.textContent = `${online} online`;
      onlineEl.hidden = false;
    }
    if (!Array.isArray(users)) return;
    const items = users.map((user) => {
      const item = document.createElement("li");
      item.textContent = String(user);
      if (String(user) === streamUser) item.classList.add("me");
      return item;
    });
    usersEl.replaceChildren(...items);
  }

  // After a join or a leave, ask who is online now (once for a burst of them): the
  // answer is right whatever this page missed or replayed.
  function refreshOnline() {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      try {
        const response = await fetch(ONLINE_URL);
        if (response.ok) {
          const body = await response.json();
          showOnline(body.online, body.users);
        }
      } catch {}
    }, 300);
  }

  // Whether this event is new here (a replay after a reconnect may bring it again).
  function isNew(event) {
    if (event.lastEventId) lastEventId = event.lastEventId;
    if (!event.lastEventId) return true;
    if (seen.has(event.lastEventId)) return false;
    seen.add(event.lastEventId);
    return true;
  }

  function parse(event) {
    try {
      const value = JSON.parse(event.data);
      return value !== null && typeof value === "object" ? value : null;
    } catch {
      return null;
    }
  }

  function connect() {
    setState(hasBeenOpen ? "reconnecting" : "connecting");
    // A new EventSource sends no Last-Event-ID header; the server reads the query
    // parameter instead, so a manual reconnect resumes like an automatic one.
    const query = new URLSearchParams();
    streamUser = nameInput.value.trim();
    if (streamUser) query.set("user", streamUser);
    if (lastEventId) query.set("lastEventId", lastEventId);
    source = new EventSource(query.size ? `${STREAM_URL}?${query}` : STREAM_URL);

    source.onopen = () => {
      backoff = 1000;
      setState("open");
      if (isDown) notice("Reconnected.", "good");
      isDown = false;
      hasBeenOpen = true;
    };

    source.onerror = () => {
      if (!isDown && hasBeenOpen) notice("Connection lost. Reconnecting…", "warn");
      isDown = true;
      if (source.readyState === EventSource.CLOSED) {
        // The browser will not retry this one: start a new one, backing off.
        setState("reconnecting");
        source.close();
        setTimeout(connect, backoff);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      } else {
        setState(hasBeenOpen ? "reconnecting" : "connecting");
      }
    };

    source.addEventListener("hello", (event) => {
      const hello = parse(event);
      if (hello === null) return;
      showOnline(hello.online, hello.users);
      // Greet once; every reconnect gets a fresh hello from the server.
      if (!list.querySelector(".welcome")) notice(String(hello.text ?? "Welcome!"), "welcome");
    });

    source.addEventListener("message", (event) => {
      hasResetNotice = false;
      if (!isNew(event)) return;
      const message = parse(event);
      if (message === null) return;
      showMessage(String(message.user ?? "?"), String(message.text ?? ""), sentDate(message));
    });

    for (const [type, verb] of [["join", "joined"], ["leave", "left"]]) {
      source.addEventListener(type, (event) => {
        if (!isNew(event)) return;
        const change = parse(event);
        if (change === null) return;
        notice(`${String(change.sub ?? "?")} ${verb}`, type);
        refreshOnline();
      });
    }

    source.addEventListener("reset", (event) => {
      // The server could not replay from our last id (it restarted, or the gap was
      // longer than its history): say that something may be missing, carry on.
      if (event.lastEventId) lastEventId = event.lastEventId;
      // An empty room's reset carries no id, so each reconnect until the next message
      // brings another: say it once.
      if (hasResetNotice) return;
      hasResetNotice = true;
      notice("Some messages sent while you were disconnected may be missing.", "warn");
    });
  }

  async function send(event) {
    event.preventDefault();
    const user = nameInput.value.trim();
    const text = textInput.value.trim();
    if (!user) {
      nameInput.focus();
      formError.textContent = "Please enter your name.";
      return;
    }
    if (!text) {
      textInput.focus();
      return;
    }
    remember(user);
    sendButton.disabled = true;
    formError.textContent = "";
    try {
      const response = await fetch(STREAM_URL, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user, text }),
      });
      if (!response.ok) {
        let reason = `${response.status} ${response.statusText}`;
        try {
          reason = (await response.json()).error ?? reason;
        } catch {}
        formError.textContent = `Not sent: ${reason}`;
        return;
      }
      textInput.value = "";
      // Listed as online under the name just used: reopen the stream with it (it
      // resumes after the last event seen, so nothing is missed or shown twice).
      if (user !== streamUser) {
        source.close();
        connect();
      }
    } catch {
      formError.textContent = "Not sent: the server cannot be reached. Try again.";
    } finally {
      sendButton.disabled = false;
      textInput.focus();
    }
  }

  // The name is remembered for the next visit, where storage is allowed.
  function remember(user) {
    try {
      localStorage.setItem("chat-name", user);
    } catch {}
  }

  try {
    nameInput.value = localStorage.getItem("chat-name") ?? "";
  } catch {}
  form.addEventListener("submit", send);
  (nameInput.value ? textInput : nameInput).focus();
  connect();
})();
