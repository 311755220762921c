"""A thin adapter over panoramisk's AMI client, usable from sync code and from Jupyter.

Why an adapter:

* panoramisk is asyncio-only and its ``Manager`` must be created inside a running loop
  (it warns on Python 3.12+ and breaks on 3.14 otherwise: asyncio.get_event_loop() outside
  a loop is deprecated).  A notebook
  already runs a loop (Jupyter's) that plain code must not block or re-enter.
* So the adapter owns a private event loop in a daemon thread.  Sync methods submit
  coroutines to it and wait on a ``concurrent.futures.Future``; ``await client.aaction()``
  does the same from Jupyter's loop without blocking it.  Either way the AMI connection
  never meets the caller's loop.
* AMI listens on the PBX host's loopback inside its namespace; the TCP socket is created
  in that namespace (:meth:`labkit.netns.Namespace.socket`) and handed to asyncio.
"""
from __future__ import annotations

import asyncio
import collections
import fnmatch
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from panoramisk import Manager

from labkit.errors import AsteriskError, AsteriskTimeout
from labkit.net.netns import Namespace


class _NamespacedManager(Manager):
    """panoramisk's Manager, connecting through a socket made in a lab namespace."""

    def __init__(self, namespace: Namespace, **config: Any):
        super().__init__(**config)
        self._namespace = namespace

    def connect(self, run_forever=False, on_startup=None, on_shutdown=None):
        async def open_connection():
            sock = self._namespace.socket()
            sock.setblocking(False)
            await self.loop.sock_connect(sock, (self.config["host"], self.config["port"]))
            return await self.loop.create_connection(self.config["protocol_factory"], sock=sock)

        task = self.loop.create_task(open_connection())
        task.add_done_callback(self.connection_made)
        return task


class AmiClient:
    """An AMI session to one lab Asterisk.

    >>> ami = lab.pbx.ami
    >>> ami.action("PJSIPShowEndpoints")          # list of event dicts
    >>> ami.command("core show channels")         # CLI output through AMI
    >>> ami.wait_event("Hangup", timeout=10)      # the next matching event
    """

    def __init__(self, namespace: Namespace, port: int, username: str, secret: str,
                 history: int = 2000):
        self.namespace = namespace
        self.port = port
        self.username = username
        self.secret = secret
        #: Every event received, newest last (bounded): for notebooks to look at.
        self.events: collections.deque[dict[str, str]] = collections.deque(maxlen=history)
        self._waiters: list[tuple[str, Callable[[dict], bool], Future]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._manager: _NamespacedManager | None = None

    # -- connection -----------------------------------------------------------------------
    def connect(self, timeout: float = 5.0) -> AmiClient:
        if self._manager is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="labkit-ami",
                                        daemon=True)
        self._thread.start()
        self._submit(self._connect(), timeout)
        return self

    async def _connect(self) -> None:
        manager = _NamespacedManager(
            self.namespace, loop=asyncio.get_running_loop(), host="127.0.0.1", port=self.port,
            username=self.username, secret=self.secret, ping_delay=3600, reconnect_timeout=1)
        manager.register_event("*", self._on_event)
        await manager.connect()
        deadline = time.monotonic() + 5
        while manager.authenticated_future is not None or not manager.authenticated:
            if manager.authenticated_future is None and not manager.authenticated:
                raise AsteriskError("AMI login refused.", cause="wrong AMI user or secret",
                                    hint="the lab renders manager.conf; was it edited?")
            if time.monotonic() > deadline:
                raise AsteriskError("AMI login did not complete within 5 s.")
            await asyncio.sleep(0.01)
        self._manager = manager

    def close(self) -> None:
        if self._loop is None:
            return
        if self._manager is not None:
            manager = self._manager

            def shutdown():
                if manager.pinger is not None:
                    manager.pinger.cancel()
                if manager.protocol is not None:
                    manager.protocol.close()
            self._loop.call_soon_threadsafe(shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)
        self._loop.close()
        self._loop = self._thread = self._manager = None

    # -- actions --------------------------------------------------------------------------
    def action(self, name: str, timeout: float = 10.0, **fields: Any) -> list[dict[str, str]]:
        """Send an AMI action; return every message of the answer as a dict.

        List actions (``PJSIPShowEndpoints``, ``SIPpeers``, ``CoreShowChannels``…) answer
        with a response, one event per item and a ``…Complete`` event; all are returned.
        """
        return self._submit(self.aaction_coro(name, **fields), timeout)

    async def aaction(self, name: str, timeout: float = 10.0, **fields: Any) -> list[dict[str, str]]:
        """The same as :meth:`action`, awaitable from a running loop (Jupyter)."""
        future = asyncio.run_coroutine_threadsafe(self.aaction_coro(name, **fields), self._require_loop())
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    async def aaction_coro(self, name: str, **fields: Any) -> list[dict[str, str]]:
        action = {"Action": name, **{k: str(v) for k, v in fields.items()}}
        # as_list=None lets panoramisk collect list answers (EventList: start … Complete)
        # and return single responses (Command, Originate) as they come.
        answer = await self._manager.send_action(action, as_list=None)
        messages = [dict(m) for m in (answer if isinstance(answer, list) else [answer])]
        if messages and messages[0].get("Response") == "Error":
            raise AsteriskError(f"AMI action {name} failed: {messages[0].get('Message')}")
        return messages

    def command(self, cli_command: str, timeout: float = 10.0) -> str:
        """Run a CLI command through AMI and return its text output."""
        messages = self.action("Command", timeout=timeout, Command=cli_command)
        out = []
        for message in messages:
            output = message.get("Output")
            if isinstance(output, list):
                out.extend(output)
            elif output:
                out.append(output)
        return "\n".join(out)

    def originate(self, channel: str, extension: str, context: str, *, priority: int = 1,
                  caller_id: str | None = None, timeout_ms: int = 30000) -> list[dict[str, str]]:
        """Originate a call: ring ``channel``, and when answered send it to the dialplan."""
        fields = dict(Channel=channel, Exten=extension, Context=context, Priority=priority,
                      Timeout=timeout_ms, Async="true")
        if caller_id:
            fields["CallerID"] = caller_id
        return self.action("Originate", **fields)

    # -- events ---------------------------------------------------------------------------
    def _on_event(self, manager, message) -> None:
        event = dict(message)
        self.events.append(event)
        with self._lock:
            for waiter in list(self._waiters):
                pattern, predicate, future = waiter
                if fnmatch.fnmatch(event.get("Event", ""), pattern) and predicate(event):
                    self._waiters.remove(waiter)
                    if not future.done():
                        future.set_result(event)

    def wait_event(self, pattern: str, predicate: Callable[[dict], bool] = lambda e: True,
                   timeout: float = 10.0, include_past: bool = False) -> dict[str, str]:
        """Block until an event whose name matches ``pattern`` (fnmatch) and ``predicate``."""
        future: Future = Future()
        with self._lock:
            if include_past:
                for event in self.events:
                    if fnmatch.fnmatch(event.get("Event", ""), pattern) and predicate(event):
                        return event
            self._waiters.append((pattern, predicate, future))
        try:
            return future.result(timeout)
        except TimeoutError:
            with self._lock:
                self._waiters = [w for w in self._waiters if w[2] is not future]
            raise AsteriskTimeout(f"No AMI event {pattern} within {timeout:g} s.") from None

    # -- plumbing -------------------------------------------------------------------------
    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self.connect()
        return self._loop

    def _submit(self, coro, timeout: float):
        future = asyncio.run_coroutine_threadsafe(coro, self._require_loop())
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise AsteriskTimeout(f"AMI did not answer within {timeout:g} s.",
                                hint="is Asterisk running? `labkit status`") from None

    def __enter__(self) -> AmiClient:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()
