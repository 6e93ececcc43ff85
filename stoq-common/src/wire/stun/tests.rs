//! The STUN codec against RFC 5769's test vectors, and against hostile bytes.

use super::*;

/// RFC 5769 §2.1, "Sample Request" (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
/// MESSAGE-INTEGRITY, FINGERPRINT).
const SAMPLE_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 §2.2, "Sample IPv4 Response": XOR-MAPPED-ADDRESS 192.0.2.1:32853.
const SAMPLE_IPV4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
];

/// RFC 5769 §2.3, "Sample IPv6 Response": XOR-MAPPED-ADDRESS
/// [2001:db8:1234:5678:11:2233:4455:6677]:32853.
const SAMPLE_IPV6_RESPONSE: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
];

const RFC_ID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

#[test]
fn rfc5769_sample_request() {
    assert!(is_stun(&SAMPLE_REQUEST));
    let m = Message::parse(&SAMPLE_REQUEST).unwrap();
    assert_eq!(m.class(), Class::Request);
    assert_eq!(m.method(), METHOD_BINDING);
    assert_eq!(m.transaction_id(), RFC_ID);
    assert_eq!(m.fingerprint(), Fingerprint::Valid);
    assert_eq!(m.software(), Some("STUN test client"));
    let kinds: [u16; 6] = core::array::from_fn(|i| m.attributes().nth(i).unwrap().kind);
    assert_eq!(kinds, [0x8022, 0x0024, 0x8029, 0x0006, 0x0008, 0x8028]);
    assert_eq!(m.attributes().count(), 6);
    assert_eq!(m.get(attr::USERNAME).unwrap().value, b"evtj:h6vY");
    // PRIORITY (0x0024) is comprehension-required and unknown to a Binding client.
    assert_eq!(
        m.unknown_required(&[attr::USERNAME, attr::MESSAGE_INTEGRITY]),
        Some(0x0024)
    );
    assert_eq!(m.mapped_address(), Ok(None));
}

#[test]
fn rfc5769_sample_responses() {
    let m = Message::parse(&SAMPLE_IPV4_RESPONSE).unwrap();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.method(), METHOD_BINDING);
    assert_eq!(m.fingerprint(), Fingerprint::Valid);
    assert_eq!(m.software(), Some("test vector"));
    assert_eq!(
        m.mapped_address(),
        Ok(Some("192.0.2.1:32853".parse().unwrap()))
    );
    let m = Message::parse(&SAMPLE_IPV6_RESPONSE).unwrap();
    assert_eq!(m.fingerprint(), Fingerprint::Valid);
    assert_eq!(
        m.mapped_address(),
        Ok(Some(
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap()
        ))
    );
}

#[test]
fn the_writer_reproduces_the_rfc_request_fingerprint() {
    // Re-emit the sample request's attributes (all but FINGERPRINT) and let the writer
    // compute FINGERPRINT: it must be the RFC's.
    let m = Message::parse(&SAMPLE_REQUEST).unwrap();
    let mut out = [0u8; 128];
    let mut w = Writer::new(&mut out, Class::Request, METHOD_BINDING, &RFC_ID).unwrap();
    for a in m.attributes().filter(|a| a.kind != attr::FINGERPRINT) {
        w.attribute(a.kind, a.value).unwrap();
    }
    let n = w.finish_with_fingerprint().unwrap();
    // USERNAME's padding is spaces in the RFC (any bytes are allowed), zeros here.
    let mut want = SAMPLE_REQUEST;
    want[73..76].fill(0);
    // The CRC covers the padding, so compare everything up to the CRC, then check ours.
    assert_eq!(out[..n - 4], want[..104]);
    assert_eq!(
        Message::parse(&out[..n]).unwrap().fingerprint(),
        Fingerprint::Valid
    );
}

#[test]
fn message_types_place_the_class_bits() {
    assert_eq!(message_type(Class::Request, METHOD_BINDING), 0x0001);
    assert_eq!(message_type(Class::Indication, METHOD_BINDING), 0x0011);
    assert_eq!(message_type(Class::Success, METHOD_BINDING), 0x0101);
    assert_eq!(message_type(Class::Error, METHOD_BINDING), 0x0111);
    // TURN's methods (RFC 8656): Allocate 0x003, ChannelBind 0x009.
    assert_eq!(message_type(Class::Error, 0x003), 0x0113);
    assert_eq!(message_type(Class::Success, 0x009), 0x0109);
    for method in [0x001, 0x003, 0x009, 0xfff] {
        for class in [
            Class::Request,
            Class::Indication,
            Class::Success,
            Class::Error,
        ] {
            let mut b = [0u8; 20];
            Writer::new(&mut b, class, method, &[0; 12])
                .unwrap()
                .finish();
            let m = Message::parse(&b).unwrap();
            assert_eq!((m.class(), m.method()), (class, method));
        }
    }
}

#[test]
fn xor_addresses_round_trip() {
    for addr in ["203.0.113.9:61234", "[2001:db8::1:2]:3478", "0.0.0.0:0"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let mut b = [0u8; 64];
        let mut w = Writer::new(&mut b, Class::Success, METHOD_BINDING, &[0xab; 12]).unwrap();
        w.xor_address(attr::XOR_MAPPED_ADDRESS, addr).unwrap();
        let n = w.finish_with_fingerprint().unwrap();
        let m = Message::parse(&b[..n]).unwrap();
        assert_eq!(m.mapped_address(), Ok(Some(addr)));
    }
}

#[test]
fn error_codes() {
    let mut b = [0u8; 64];
    let mut w = Writer::new(&mut b, Class::Error, METHOD_BINDING, &[1; 12]).unwrap();
    w.attribute(attr::ERROR_CODE, b"\0\0\x04\x14Unknown")
        .unwrap();
    let n = w.finish();
    assert_eq!(
        Message::parse(&b[..n]).unwrap().error_code(),
        Ok(Some((420, "Unknown")))
    );
    for bad in [&b"\0\0\x07\x00"[..], b"\0\0\x04\x64", b"\0\0\x04"] {
        let mut b = [0u8; 64];
        let mut w = Writer::new(&mut b, Class::Error, METHOD_BINDING, &[1; 12]).unwrap();
        w.attribute(attr::ERROR_CODE, bad).unwrap();
        let n = w.finish();
        assert_eq!(
            Message::parse(&b[..n]).unwrap().error_code(),
            Err(StunError::ErrorCode)
        );
    }
}

#[test]
fn hostile_messages_are_refused_with_their_reason() {
    let r = &SAMPLE_IPV4_RESPONSE;
    let with = |f: &dyn Fn(&mut [u8; 80])| {
        let mut b = *r;
        f(&mut b);
        Message::parse(&b).map(|_| ())
    };
    assert_eq!(
        Message::parse(&r[..19]).map(|_| ()),
        Err(StunError::TooShort)
    );
    assert_eq!(with(&|b| b[0] |= 0x40), Err(StunError::NotStun));
    assert_eq!(with(&|b| b[5] ^= 1), Err(StunError::NotStun));
    assert_eq!(with(&|b| b[3] = 0x3d), Err(StunError::Length));
    assert_eq!(with(&|b| b[3] = 0x40), Err(StunError::Length));
    assert_eq!(Message::parse(&r[..76]).map(|_| ()), Err(StunError::Length));
    // SOFTWARE claims 0xff0b bytes (an oversized attribute).
    assert_eq!(with(&|b| b[22] = 0xff), Err(StunError::AttributeOverrun));
    // One bit of the mapped address flipped: FINGERPRINT no longer matches.
    assert_eq!(with(&|b| b[46] ^= 1), Err(StunError::Fingerprint));
    // An attribute after FINGERPRINT.
    let mut b = [0u8; 96];
    let mut w = Writer::new(&mut b, Class::Success, METHOD_BINDING, &[0; 12]).unwrap();
    w.attribute(attr::SOFTWARE, b"x").unwrap();
    let n = w.finish_with_fingerprint().unwrap();
    let mut longer = [0u8; 96];
    longer[..n].copy_from_slice(&b[..n]);
    longer[n..n + 4].copy_from_slice(&[0x80, 0x22, 0, 0]);
    longer[3] += 4;
    assert_eq!(
        Message::parse(&longer[..n + 4]).map(|_| ()),
        Err(StunError::AfterFingerprint)
    );
    // Too many (empty) attributes.
    let mut many = [0u8; HEADER_LEN + 4 * (MAX_ATTRIBUTES + 1)];
    let mut w = Writer::new(&mut many, Class::Success, METHOD_BINDING, &[0; 12]).unwrap();
    for _ in 0..=MAX_ATTRIBUTES {
        w.attribute(attr::SOFTWARE, b"").unwrap();
    }
    let n = w.finish();
    assert_eq!(
        Message::parse(&many[..n]).map(|_| ()),
        Err(StunError::TooManyAttributes)
    );
    // Address attributes of an unknown family or a wrong length decode to an error.
    for v in [
        &[0u8, 3, 0, 0, 1, 2, 3, 4][..],
        &[0, 1, 0, 0, 1, 2, 3],
        &[0, 2, 0, 0, 1, 2, 3, 4],
    ] {
        let mut b = [0u8; 64];
        let mut w = Writer::new(&mut b, Class::Success, METHOD_BINDING, &[0; 12]).unwrap();
        w.attribute(attr::XOR_MAPPED_ADDRESS, v).unwrap();
        let n = w.finish();
        assert_eq!(
            Message::parse(&b[..n]).unwrap().mapped_address(),
            Err(StunError::Address)
        );
    }
}

#[test]
fn every_truncation_and_byte_flip_is_handled() {
    for src in [
        &SAMPLE_REQUEST[..],
        &SAMPLE_IPV4_RESPONSE,
        &SAMPLE_IPV6_RESPONSE,
    ] {
        for len in 0..src.len() {
            assert!(Message::parse(&src[..len]).is_err());
        }
        let mut b = [0u8; 108];
        for i in 0..src.len() {
            for bit in 0..8 {
                b[..src.len()].copy_from_slice(src);
                b[i] ^= 1 << bit;
                if let Ok(m) = Message::parse(&b[..src.len()]) {
                    // A flip may reshape the attributes so that FINGERPRINT is no longer
                    // one of them (hidden in a longer value): such a message parses, but
                    // never as one with a matching FINGERPRINT.
                    let _ = (m.mapped_address(), m.error_code(), m.attributes().count());
                    assert_eq!(m.fingerprint(), Fingerprint::Absent, "byte {i} bit {bit}");
                }
            }
        }
    }
}

#[test]
fn the_writer_refuses_what_does_not_fit() {
    let mut tiny = [0u8; 19];
    assert_eq!(
        Writer::new(&mut tiny, Class::Request, METHOD_BINDING, &[0; 12]).map(|_| ()),
        Err(StunError::BufferTooSmall)
    );
    let mut b = [0u8; 24];
    let mut w = Writer::new(&mut b, Class::Request, METHOD_BINDING, &[0; 12]).unwrap();
    assert_eq!(
        w.attribute(attr::SOFTWARE, b"x"),
        Err(StunError::BufferTooSmall)
    );
    assert_eq!(w.finish_with_fingerprint(), Err(StunError::BufferTooSmall));
}
