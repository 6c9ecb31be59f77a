from tests.conftest import RunningServer


def test_app_addresses_over_udp_and_tcp(server: RunningServer) -> None:
    for tcp in (False, True):
        reply = server.ask("my-app.internal", "AAAA", tcp=tcp)
        assert reply.rcode_text == "NOERROR"
        assert reply.flag("AA")
        assert sorted(reply.addresses()) == sorted(
            ["fdaa:0:18:a7b:7d:f066:b83b:2", "fdaa:0:18:a7b:c4:5b1:8f2e:2", "fdaa:0:18:a7b:9f:3c21:44d0:2"]
        )
