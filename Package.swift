// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "moetool",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "moetool", targets: ["moetool"]),
        .library(name: "SafetensorsFormat", targets: ["SafetensorsFormat"]),
        .library(name: "Checkpoint", targets: ["Checkpoint"]),
        .library(name: "Inspection", targets: ["Inspection"]),
        .library(name: "Conversion", targets: ["Conversion"]),
        .library(name: "ExpertPlacement", targets: ["ExpertPlacement"]),
        .library(name: "PlacementFiles", targets: ["PlacementFiles"]),
        .library(name: "TorchArchive", targets: ["TorchArchive"]),
        .library(name: "ShardCompression", targets: ["ShardCompression"]),
        .library(name: "ForwardPass", targets: ["ForwardPass"]),
        .library(name: "WeightReading", targets: ["WeightReading"]),
        .library(name: "RemoteCheckpoint", targets: ["RemoteCheckpoint"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries chosen for the project (Debian: libzstd-dev, libjson-c-dev).
        .systemLibrary(
            name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(
            name: "CJSONC", path: "Sources/CJSONC", pkgConfig: "json-c",
            providers: [.apt(["libjson-c-dev"])]),
        // SHA-256 for inspect --checksum from the system's OpenSSL (Debian: libssl-dev): no BoringSSL to compile
        // (Docs/benchmarks.md, "Build time and SHA-256").
        .systemLibrary(
            name: "CLibcrypto", path: "Sources/CLibcrypto", pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]),

        // zlib (Debian: zlib1g-dev), for the tests only: the browser test decodes Chromium's PNG screenshots.
        .systemLibrary(
            name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]),

        // Vectorizable C loops for the FP8 block math (each has a scalar Swift twin the tests compare).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3", "-ffp-contract=off"])]),
        // Number formats: narrow floats (BF16, F16, FP8 variants) decoded and rounded bit-exactly.
        .target(name: "NumberFormats", dependencies: ["CKernels"]),
        // Strict JSON: exact integers, duplicate keys detected, bounded nesting.
        .target(name: "StrictJSON"),
        // torch.save files read without torch: the zip, a pickle machine that runs nothing, tensors as numbers.
        .target(name: "TorchArchive"),
        // Small shared utilities with no domain: a parallel map over indices, a seedable generator.
        .target(name: "Support"),
        // Signal handlers that name the file behind a bus error and delete unfinished outputs.
        .target(name: "CSafety"),
        // The safetensors file format: dtypes, header validation, mapped reader, writer.
        .target(name: "SafetensorsFormat", dependencies: ["StrictJSON", "CSafety"]),
        // Checkpoints: single files, sharded directories with an index, config.json.
        .target(
            name: "Checkpoint",
            dependencies: ["SafetensorsFormat", "StrictJSON", "NumberFormats", "CJSONC", "CLibcrypto", "Support"]),
        // Conversion to and from the FP8 block format, streamed and atomic.
        .target(
            name: "Conversion",
            dependencies: [
                "Checkpoint", "SafetensorsFormat", "StrictJSON", "NumberFormats", "CKernels", "Support", "WeightReading", "ShardCompression",
            ]),
        // The one way weights are read: encodings recognised once, decoded to float32 rows, from plain or compressed shards.
        .target(name: "WeightReading", dependencies: ["Checkpoint", "SafetensorsFormat", "ShardCompression", "NumberFormats", "CKernels"]),
        // Read-only analysis: MoE layout, parameter counts, name patterns, data scans, checksums.
        .target(
            name: "Inspection",
            dependencies: [
                "Checkpoint", "SafetensorsFormat", "StrictJSON", "NumberFormats", "ShardCompression", "Support", "WeightReading",
            ]),
        // Expert replication and placement over GPUs and nodes from load profiles (plan-experts):
        // pure algorithms, and the profile and placement formats as bytes in, values out.
        .target(name: "ExpertPlacement", dependencies: ["Support", "StrictJSON"]),
        // Expert placement's files: profiles read (zstd too), placements written atomically, the report.
        .target(name: "PlacementFiles", dependencies: ["ExpertPlacement", "TorchArchive", "SafetensorsFormat", "StrictJSON", "Support", "CZstd"]),
        // Lossless compressed shards: byte planes, zstd, chunk checksums, random access.
        .target(name: "ShardCompression", dependencies: ["SafetensorsFormat", "Checkpoint", "StrictJSON", "CZstd", "CKernels", "Support"]),
        // Header-only reading of checkpoints on a Hugging Face endpoint (inspect hf://org/name).
        .target(name: "RemoteCheckpoint", dependencies: ["SafetensorsFormat", "StrictJSON"]),
        // A float32 forward pass of MoE blocks on the CPU (verify).
        .target(name: "ForwardPass", dependencies: ["Support", "WeightReading", "Checkpoint", "SafetensorsFormat", "NumberFormats", "CKernels", "StrictJSON"]),
        .executableTarget(
            name: "moetool",
            dependencies: [
                "Inspection", "Conversion", "ExpertPlacement", "PlacementFiles", "ShardCompression", "ForwardPass", "Checkpoint", "SafetensorsFormat", "StrictJSON", "CKernels",
                "RemoteCheckpoint", "Support",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // Fuzz targets (Scripts/fuzz.sh builds them for libFuzzer); normally a replayer of inputs.
        .executableTarget(
            name: "moetool-fuzz",
            dependencies: ["SafetensorsFormat", "Checkpoint", "ExpertPlacement", "PlacementFiles", "ShardCompression", "TorchArchive"]),

        // Locates and reads the committed fixtures for every test target.
        .target(name: "FixtureSupport", dependencies: ["Support", "StrictJSON", "SafetensorsFormat", "ShardCompression", "Checkpoint"],
                path: "Tests/FixtureSupport"),
        .testTarget(name: "NumberFormatsTests", dependencies: ["NumberFormats", "FixtureSupport", "StrictJSON", "SafetensorsFormat"]),
        .testTarget(name: "StrictJSONTests", dependencies: ["StrictJSON"]),
        .testTarget(name: "TorchArchiveTests", dependencies: ["TorchArchive", "FixtureSupport"]),
        .testTarget(name: "SupportTests", dependencies: ["Support"]),
        .testTarget(name: "SafetensorsFormatTests", dependencies: ["SafetensorsFormat", "StrictJSON", "FixtureSupport"]),
        .testTarget(name: "CheckpointTests", dependencies: ["Checkpoint", "SafetensorsFormat", "StrictJSON", "FixtureSupport"]),
        .testTarget(
            name: "InspectionTests",
            dependencies: ["Support", "WeightReading", "Inspection", "Checkpoint", "SafetensorsFormat", "StrictJSON", "NumberFormats", "FixtureSupport"]),
        .testTarget(
            name: "ConversionTests",
            dependencies: ["Conversion", "Checkpoint", "SafetensorsFormat", "NumberFormats", "StrictJSON", "FixtureSupport"]),
        .testTarget(name: "ExpertPlacementTests", dependencies: ["ExpertPlacement", "StrictJSON", "FixtureSupport"]),
        .testTarget(name: "PlacementFilesTests", dependencies: ["PlacementFiles", "ExpertPlacement", "StrictJSON", "FixtureSupport", "Support", "CZlib"]),
        .testTarget(name: "ShardCompressionTests", dependencies: ["Support", "ShardCompression", "SafetensorsFormat", "Checkpoint", "CKernels", "FixtureSupport"]),
        .testTarget(name: "WeightReadingTests", dependencies: ["WeightReading", "Checkpoint", "SafetensorsFormat", "ShardCompression", "NumberFormats", "StrictJSON", "FixtureSupport"]),
        .testTarget(name: "ForwardPassTests", dependencies: ["ForwardPass", "Checkpoint", "SafetensorsFormat", "StrictJSON", "FixtureSupport", "Support"]),
        .testTarget(name: "MoetoolCLITests", dependencies: ["moetool", "StrictJSON", "SafetensorsFormat", "FixtureSupport"]),
    ]
)
