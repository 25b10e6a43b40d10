"""supportflow's chat frontend: a FastAPI server, a static chat page and an operator view.

Transport choices:

- **Chat: a WebSocket** (``/ws``). A chat is two-way and interactive: the page
  sends messages and receives replies on the same connection, and the server
  answers each send (published / rejected with the contract's reason) on the
  stream it already has, in order with the replies. With SSE the sends would
  be separate POSTs whose acknowledgements race the event stream. On connect
  the server first sends the session's history, so a reload or reconnect
  resumes without gaps; events carry keys (message id, turn id), so the page
  and the server both drop what was already shown.
- **Operator view: Server-Sent Events** (``/api/ops/stream``), plus the same
  snapshot as plain JSON at ``/api/ops``. It is one-way, low-rate (one snapshot
  a second) and read-only; ``EventSource`` reconnects by itself and needs no
  protocol of ours.

Fan-out: one streaming pull on a private reply subscription per web process
(``web.hub``), replies stored per session (``web.store``) before they are
acked, then routed to the sockets of that session. ``python -m web`` runs it;
``web.app.create_app`` builds the app.

Limits (a demo frontend, by design):

- History lives in the memory of one web process. Several processes behind a
  load balancer need sticky sessions (a page must reconnect to the process that
  holds its session); a restarted process starts empty (the page then re-opens
  its session, with the customer id it kept, and resends unacknowledged messages).
- A reply subscription only receives replies published after it was created.
- Identity comes from a signed token (``web.identity``; keys from configuration), and each session
  is bound to the token's customer. ``python -m web`` on the local stack runs a clearly labelled DEMO
  login that mints those tokens for any seeded customer; a deployment turns it off
  (``--no-demo-login``) and takes tokens from its identity provider (docs/security.md).
"""
