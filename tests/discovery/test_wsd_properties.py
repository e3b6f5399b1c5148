"""Property tests: the codec only ever raises DecodeError; encode->decode round-trips."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.discovery import wsd
from agent.discovery.wsd import AppSequence, Bye, Hello, Probe, ProbeMatches, QName, TargetService
from agent.errors import DecodeError
from tests.discovery.test_wsd_codec import TARGET, envelope

token = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="\x85\xa0"
    ),
    min_size=1,
    max_size=30,
).filter(lambda s: s == s.strip() and not any(c.isspace() for c in s))
uri = st.builds(lambda a, b: f"{a}:{b}", st.sampled_from(["urn:uuid", "uuid", "http"]), token)
ncname = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.\-]{0,15}\Z")
namespace = st.sampled_from([wsd.DN_NS, wsd.TDS_NS, "http://example.com/ns", "urn:x:y", ""])
qname = st.builds(QName, namespace, ncname)
uint32 = st.integers(min_value=0, max_value=2**32 - 1)
version = st.sampled_from(list(wsd.WsdVersion))
sequence = st.none() | st.builds(AppSequence, uint32, uint32, st.none() | uri)
target = st.builds(
    TargetService,
    endpoint=uri,
    types=st.lists(qname, max_size=4).map(tuple),
    scopes=st.lists(uri, max_size=4).map(tuple),
    xaddrs=st.lists(uri, max_size=3).map(tuple),
    metadata_version=uint32,
)
message = st.one_of(
    st.builds(
        Probe,
        version,
        uri,
        st.lists(qname, max_size=4).map(tuple),
        st.lists(uri, max_size=4).map(tuple),
        st.none() | uri,
    ),
    st.builds(
        ProbeMatches,
        version,
        uri,
        st.none() | uri,
        st.lists(target, max_size=3).map(tuple),
        sequence,
    ),
    st.builds(Hello, version, uri, target, sequence),
    st.builds(Bye, version, uri, uri, sequence),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(message)
def test_encode_then_decode_round_trips(original: wsd.Message) -> None:
    assert wsd.decode(wsd.encode(original)) == original


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_decode_of_arbitrary_bytes_raises_only_decode_errors(data: bytes) -> None:
    try:
        decoded = wsd.decode(data)
    except DecodeError:  # TooLargeError is a DecodeError
        return
    assert isinstance(decoded, Probe | ProbeMatches | Hello | Bye)


@settings(max_examples=300)
@given(st.data())
def test_decode_of_mutated_valid_messages_raises_only_decode_errors(data: st.DataObject) -> None:
    valid = bytearray(
        wsd.encode(ProbeMatches(wsd.WsdVersion.V2005_04, "uuid:1", "uuid:2", (TARGET,)))
        if data.draw(st.booleans())
        else envelope("<d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe>")
    )
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(valid) - 1))
        valid[position] = data.draw(st.integers(0, 255))
    try:
        decoded = wsd.decode(bytes(valid))
    except DecodeError:
        return
    assert isinstance(decoded, Probe | ProbeMatches | Hello | Bye)
