"""A small read-only web page of the registry, served on each member's metrics listener at ``/ui``.

What Consul's users look at in a browser: the cluster's members and its leader, then every service of the
namespace with its instances (address, lease TTL left, metadata) and the recent changes, refreshed live.
The page itself is static; once a second it fetches ``/ui/state``, the JSON of a view the member keeps
current from a watch (so a change shows within a second, and the TTLs count down). Short requests rather
than a held-open stream, so that nothing stays in flight between refreshes (a headless browser can tell
when the page has settled).

It reads through ``raftkv.client`` like any other client (the member dials its own client port with its
own certificate, which is also a client certificate): list the namespace at R, watch from R+1, list again
after a compacted or canceled watch, exactly as the resolver does per service.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from typing import Any

from raftkv.client import AsyncClient, ClientConfig, ClientError, CompactedError, WatchCanceled
from raftkv.client.types import Event
from raftkv.discovery import record
from raftkv.discovery.lifecycle import Backoff
from raftkv.discovery.view import Change, ServiceView

log = logging.getLogger("raftkv.discovery.web")
#: Instances whose lease TTL is looked up per refresh (the page is for people, not for a huge registry).
TTL_LOOKUPS = 200
RECENT_CHANGES = 50


class RegistryPage:
    """Keeps a namespace-wide view from one watch and answers the page's HTTP requests."""

    def __init__(self, config: ClientConfig, namespace: str = record.DEFAULT_NAMESPACE) -> None:
        self._config = config
        self.namespace = record.normalize_namespace(namespace)
        self._views: dict[str, ServiceView] = {}
        self.changes: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_CHANGES)
        self._client: AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.error: str | None = None

    # ----------------------------------------------------------------- the view

    def _view(self, service: str) -> ServiceView:
        if service not in self._views:
            self._views[service] = ServiceView(service, self.namespace)
        return self._views[service]

    def _service_of(self, key: bytes) -> str | None:
        rest = key.decode("utf-8", "replace")[len(self.namespace) + 1:]
        service, sep, _ = rest.partition("/")
        return service if sep and service else None

    def _note(self, changes: list[Change], service: str) -> None:
        for c in changes:
            self.changes.appendleft({"time": time.time(), "service": service, "kind": c.kind.value,
                                     "id": c.instance.id, "addr": c.instance.addr, "revision": c.revision})

    async def _follow(self) -> None:
        self._client = AsyncClient(config=self._config, timeout=3.0)
        prefix = self.namespace + "/"
        backoff = Backoff(limit=2.0)
        while True:
            try:
                listing = await self._client.get_prefix(prefix)
                grouped: dict[str, list[Any]] = collections.defaultdict(list)
                for kv in listing.kvs:
                    service = self._service_of(kv.key)
                    if service is not None:
                        grouped[service].append(kv)
                for service in set(grouped) | set(self._views):
                    self._note(self._view(service).reset(grouped.get(service, []), listing.revision), service)
                self.error = None
                backoff.reset()
                watch = await self._client.watch(prefix, prefix=True, start_revision=listing.revision + 1)
                async for response in watch.responses():
                    for pb in response.events:
                        event = Event.from_pb(pb)
                        service = self._service_of(event.kv.key)
                        if service is not None:
                            change = self._view(service).apply(event)
                            self._note([change] if change else [], service)
            except (CompactedError, WatchCanceled):
                continue
            except ClientError as exc:
                self.error = str(exc)
                await asyncio.sleep(backoff.next())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="registry-page")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.close()

    async def state(self) -> dict[str, Any]:
        """Members, leader, services with instances and TTLs left, recent changes: what the page shows."""
        assert self._client is not None
        members: list[dict[str, Any]] = []
        leader = 0
        try:
            status = await self._client.status()
            leader = status.leader
            for m in await self._client.member_list():
                members.append({"id": f"{m.id:x}", "name": m.name, "client_urls": m.client_urls,
                                "leader": m.id == leader, "learner": m.is_learner})
        except ClientError as exc:
            self.error = str(exc)
        services: dict[str, list[dict[str, Any]]] = {}
        lookups = 0
        for name in sorted(self._views):
            rows = []
            for inst in sorted(self._views[name].instances.values(), key=lambda i: i.id):
                ttl: int | None = None
                if inst.lease and lookups < TTL_LOOKUPS:
                    lookups += 1
                    with contextlib.suppress(ClientError):
                        ttl = (await self._client.lease_time_to_live(inst.lease, timeout=1.0)).ttl
                rows.append({"id": inst.id, "addr": inst.addr, "metadata": dict(inst.metadata),
                             "ttl": ttl, "health": "passing" if ttl is None or ttl > 0 else "expired"})
            if rows:
                services[name] = rows
        return {"namespace": self.namespace, "leader": f"{leader:x}" if leader else None, "members": members,
                "services": services, "changes": list(self.changes), "error": self.error}

    # ----------------------------------------------------------------- HTTP

    async def handle(self, path: str, writer: asyncio.StreamWriter) -> bool:
        """Answer ``path`` if it is the page's; False for any other path (the listener answers 404)."""
        if path in ("/ui", "/ui/"):
            _respond(writer, "200 OK", "text/html; charset=utf-8", PAGE.encode())
        elif path == "/ui/state":
            body = json.dumps(await self.state()).encode()
            _respond(writer, "200 OK", "application/json", body)
        else:
            return False
        await writer.drain()
        return True


def _respond(writer: asyncio.StreamWriter, status: str, ctype: str, body: bytes) -> None:
    writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                 f"Cache-Control: no-cache\r\nConnection: close\r\n\r\n".encode() + body)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>raftkv services</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:20px}h2{font-size:16px;margin-top:1.5em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.leader{font-weight:bold}.passing{color:#176e2c}.expired{color:#b00}.err{color:#b00}
.muted{color:#777}
</style></head><body>
<h1>raftkv &mdash; services</h1>
<p id="status" class="muted">connecting&hellip;</p>
<h2>Members</h2><table id="members"><thead><tr><th>name</th><th>id</th><th>client URLs</th><th>role</th></tr></thead><tbody></tbody></table>
<div id="services"></div>
<h2>Recent changes</h2><table id="changes"><thead><tr><th>time</th><th>service</th><th>change</th><th>instance</th><th>address</th></tr></thead><tbody></tbody></table>
<script>
function cell(row, text, cls){const td=document.createElement('td');td.textContent=text;if(cls)td.className=cls;row.appendChild(td);}
function fill(tbody, rows){tbody.replaceChildren(...rows);}
function render(s){
  document.getElementById('status').textContent = s.error ? 'registry error: '+s.error : 'live, namespace '+s.namespace+'/';
  document.getElementById('status').className = s.error ? 'err' : 'muted';
  fill(document.querySelector('#members tbody'), s.members.map(m=>{const r=document.createElement('tr');
    cell(r,m.name,m.leader?'leader':'');cell(r,m.id);cell(r,m.client_urls.join(', '));
    cell(r,m.leader?'leader':(m.learner?'learner':'follower'),m.leader?'leader':'');return r;}));
  const box=document.getElementById('services');box.replaceChildren();
  const names=Object.keys(s.services);
  if(!names.length){const p=document.createElement('p');p.className='muted';p.textContent='no services registered';box.appendChild(p);}
  for(const name of names){
    const h=document.createElement('h2');h.textContent='Service '+name;box.appendChild(h);
    const t=document.createElement('table');t.className='service';t.dataset.service=name;
    t.innerHTML='<thead><tr><th>instance</th><th>address</th><th>health</th><th>lease TTL left</th><th>metadata</th></tr></thead>';
    const b=document.createElement('tbody');
    for(const i of s.services[name]){const r=document.createElement('tr');r.className='instance';
      cell(r,i.id);cell(r,i.addr);cell(r,i.health,i.health);cell(r,i.ttl===null?'-':i.ttl+' s');
      cell(r,Object.entries(i.metadata).map(([k,v])=>k+'='+v).join(', '));b.appendChild(r);}
    t.appendChild(b);box.appendChild(t);}
  fill(document.querySelector('#changes tbody'), s.changes.map(c=>{const r=document.createElement('tr');
    cell(r,new Date(c.time*1000).toLocaleTimeString());cell(r,c.service);cell(r,c.kind);cell(r,c.id);cell(r,c.addr);return r;}));
}
async function refresh(){
  try{const r=await fetch('/ui/state',{cache:'no-store'});render(await r.json());}
  catch(e){document.getElementById('status').textContent='member unreachable, retrying';}
  setTimeout(refresh,1000);
}
refresh();
</script></body></html>
"""
