import Checkpoint
import Testing

@Suite struct SHA256Vectors {
    /// FIPS 180-2 appendix B and the empty message.
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    ])
    func knownMessages(_ message: String, _ digest: String) {
        #expect(SHA256Hasher.hexDigest(of: Array(message.utf8)) == digest)
    }

    /// A million "a" fed in uneven pieces (1, 63, 64, 65 ... bytes: across and on block boundaries)
    /// gives the FIPS digest, as one update does.
    @Test func millionAInPieces() {
        let message = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        let expected = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        #expect(SHA256Hasher.hexDigest(of: message) == expected)
        let hasher = SHA256Hasher()
        let pieces = [1, 63, 64, 65, 0, 127, 4096, 55, 56]
        var offset = 0, k = 0
        message.withUnsafeBytes { all in
            while offset < all.count {
                let n = min(pieces[k % pieces.count], all.count - offset)
                hasher.update(UnsafeRawBufferPointer(rebasing: all[offset..<(offset + n)]))
                offset += n
                k += 1
            }
        }
        #expect(hasher.hexDigest() == expected)
    }
}
