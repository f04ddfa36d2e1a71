import trio
from tests.dns.conftest import *  # noqa
from tests.dns.conftest import lab  # noqa

async def test_smoke(lab):
    c = lab.client
    s = await c.create(service("web"))
    print(s["spec"])
    await c.create(endpoint_slice("web", endpoints=[ep("127.244.0.5"), ep("127.244.0.6", hostname="h1")]))
    await lab.settle(lambda snap: snap.service("default","web") is not None and snap.service("default","web").endpoints)
    r = await lab.query("Web.Default.svc.cluster.local", "A")
    print(r)
    r = await lab.query("_http._tcp.web.default.svc.cluster.local", "SRV", tcp=True)
    print(r)
    print(await lab.dig("nope.default.svc.cluster.local"))
    print(await lab.dig("web.default.svc.cluster.local", "AAAA"))
