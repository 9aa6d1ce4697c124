#!/usr/bin/python3
"""slixmpp (Debian's python3-slixmpp) as an independent, plain MUC client of a
Sealroom room, run by it_slixmpp.c, to which it reports on stdout.

It checks the service's disco#info, joins the room as an ordinary XEP-0045
client, receives the driver's message and checks the fallback <body/>, the
sealed payload and the <stanza-id by=room/>; sends a sealed message of its
own and checks its reflection; sends a plain-text message and checks it is
refused with not-acceptable/sealed-required; then leaves. Progress lines on
stdout: JOINED, GOT <stanza-id>, SENT <stanza-id> <origin-id>, REFUSED, LEFT;
"FAIL <reason>" and exit status 1 on any failure.

usage: slixmpp_peer.py JID PASSWORD HOST PORT SERVICE ROOM NICK
                       EXPECTED_B64 FALLBACK_BODY OWN_B64
"""
import asyncio
import sys
import uuid

import slixmpp
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

NS = "urn:xmpp:sealroom:0"
NS_SID = "urn:xmpp:sid:0"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
TIMEOUT = 20


class Failure(Exception):
    pass


def say(line):
    print(line, flush=True)


def check(cond, reason):
    if not cond:
        raise Failure(reason)


class Peer(slixmpp.ClientXMPP):
    def __init__(self, args):
        (jid, password, self.host, port, self.service, self.room, self.nick, self.expected,
         self.fallback, self.own) = args
        super().__init__(jid, password)
        self.port = int(port)
        self.occupant = f"{self.room}/{self.nick}"
        self.register_plugin("xep_0030")
        self.queue = asyncio.Queue()
        self.result = None
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _: self.finish("FAIL authentication"))
        # Every message and presence, error stanzas included, goes to the queue.
        self.register_handler(Callback("all messages", StanzaPath("message"), self.queue.put_nowait))
        self.register_handler(Callback("all presence", StanzaPath("presence"), self.queue.put_nowait))

    def finish(self, outcome):
        if self.result is None:
            self.result = outcome
            say(outcome)
        self.disconnect()

    async def next_matching(self, pred, what):
        """The next queued stanza for which pred holds; others are dropped."""
        loop = asyncio.get_event_loop()
        end = loop.time() + TIMEOUT
        while True:
            left = end - loop.time()
            if left <= 0:
                raise Failure(f"timed out waiting for {what}")
            try:
                st = await asyncio.wait_for(self.queue.get(), left)
            except asyncio.TimeoutError:
                raise Failure(f"timed out waiting for {what}") from None
            if pred(st):
                return st

    async def on_start(self, _event):
        try:
            await self.scenario()
            self.finish("OK")
        except Failure as e:
            self.finish(f"FAIL {e}")
        except Exception as e:  # an unexpected slixmpp error is a failure too
            self.finish(f"FAIL {type(e).__name__}: {e}")

    async def scenario(self):
        self.send_presence()

        # disco#info of the service: a conference service speaking Sealroom.
        info = await self["xep_0030"].get_info(jid=self.service, timeout=TIMEOUT)
        identities = info["disco_info"]["identities"]
        features = info["disco_info"]["features"]
        check(any(i[0] == "conference" and i[1] == "text" for i in identities),
              f"service identities {identities}")
        for f in (NS, NS_MUC, "urn:xmpp:mam:2", NS_SID):
            check(f in features, f"service feature {f} missing from {features}")

        # Join as a plain MUC client.
        pres = self.make_presence(pto=self.occupant)
        pres.append(ET.Element(f"{{{NS_MUC}}}x"))
        pres.send()

        def own_presence(st):
            if st.name != "presence" or str(st["from"]) != self.occupant:
                return False
            check(st["type"] != "error", f"join refused: {st}")
            x = st.xml.find(f"{{{NS_MUC_USER}}}x")
            return x is not None and any(s.get("code") == "110" for s in x.findall(f"{{{NS_MUC_USER}}}status"))

        await self.next_matching(own_presence, "our own presence (status 110)")
        await self.next_matching(
            lambda st: st.name == "message" and str(st["from"]) == self.room
            and st.xml.find("{jabber:client}subject") is not None, "the room subject")
        say("JOINED")

        # The driver's message: fallback body, sealed payload, stanza-id by the room.
        def sealed_groupchat(st):
            return (st.name == "message" and st["type"] == "groupchat"
                    and st.xml.find(f"{{{NS}}}sealed") is not None
                    and str(st["from"]) != self.occupant)

        msg = await self.next_matching(sealed_groupchat, "the driver's message")
        check(msg["body"] == self.fallback, f"fallback body is {msg['body']!r}")
        sealed = msg.xml.find(f"{{{NS}}}sealed")
        # The driver's payload is sealed by libsealroom with a fresh nonce, so
        # the driver cannot know it in advance: "*" asks only for a
        # well-formed, non-empty one, which the driver compares with what
        # PostgreSQL stored.
        if self.expected == "*":
            check(bool(sealed.text), "empty sealed payload")
        else:
            check((sealed.text or "") == self.expected, "sealed payload differs")
        sid = msg.xml.find(f"{{{NS_SID}}}stanza-id")
        check(sid is not None and sid.get("by") == self.room and sid.get("id"),
              f"no stanza-id by the room in {msg}")
        say(f"GOT {sid.get('id')}")

        # Our own sealed message, reflected with a stanza-id.
        origin = uuid.uuid4().hex
        out = self.make_message(mto=self.room, mtype="groupchat", mbody="(sealed, from slixmpp)")
        el = ET.Element(f"{{{NS}}}sealed")
        el.text = self.own
        out.append(el)
        oid = ET.Element(f"{{{NS_SID}}}origin-id")
        oid.set("id", origin)
        out.append(oid)
        out.send()

        def reflection(st):
            if st.name != "message":
                return False
            check(st["type"] != "error", f"our sealed message was refused: {st}")
            o = st.xml.find(f"{{{NS_SID}}}origin-id")
            return o is not None and o.get("id") == origin

        ref = await self.next_matching(reflection, "the reflection of our message")
        rsid = ref.xml.find(f"{{{NS_SID}}}stanza-id")
        check(rsid is not None and rsid.get("by") == self.room and rsid.get("id"),
              f"reflection without a stanza-id by the room: {ref}")
        check(str(ref["from"]) == self.occupant, f"reflection from {ref['from']}")
        say(f"SENT {rsid.get('id')} {origin}")

        # A plain-text message is refused.
        plain_id = uuid.uuid4().hex
        plain = self.make_message(mto=self.room, mtype="groupchat", mbody="plain text")
        plain["id"] = plain_id
        plain.send()
        err = await self.next_matching(lambda st: st.name == "message" and st["id"] == plain_id,
                                       "the refusal of a plain message")
        check(err["type"] == "error", f"plain message not refused: {err}")
        e = err.xml.find("{jabber:client}error")
        check(e is not None and e.find(f"{{{NS_STANZAS}}}not-acceptable") is not None
              and e.find(f"{{{NS}}}sealed-required") is not None,
              f"plain message refused with the wrong error: {err}")
        say("REFUSED")

        leave = self.make_presence(pto=self.occupant, ptype="unavailable")
        leave.send()
        await self.next_matching(
            lambda st: st.name == "presence" and str(st["from"]) == self.occupant
            and st["type"] == "unavailable", "our own unavailable presence")
        say("LEFT")


def main():
    if len(sys.argv) != 11:
        print(__doc__, file=sys.stderr)
        return 2
    peer = Peer(sys.argv[1:])
    loop = asyncio.get_event_loop()
    # slixmpp replaces the future once it fires: keep this one.
    done = peer.disconnected
    peer.connect((peer.host, peer.port), use_ssl=False, force_starttls=False,
                 disable_starttls=True)
    try:
        loop.run_until_complete(asyncio.wait_for(done, 4 * TIMEOUT))
    except asyncio.TimeoutError:
        say("FAIL the session did not finish in time")
        return 1
    finally:
        # Let slixmpp's own tasks end before the loop goes away.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    if peer.result is None:
        say("FAIL disconnected before finishing")
    return 0 if peer.result == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
