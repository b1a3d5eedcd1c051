import ArgumentParser
import Checkpoint
import Conversion
import NumberFormats
import SafetensorsFormat
import StrictJSON
import Support

extension ConversionTarget: ExpressibleByArgument {}
extension BlockQuantization.ScaleFormat: ExpressibleByArgument {}

struct Convert: ReportsErrorsAsJSON {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Re-quantize a checkpoint to FP8 blocks, INT4, NVFP4 or MXFP4, or decode any weight format to BF16.",
        discussion: """
            --to fp8 quantizes the 2-D weights of attention and MLP/expert projections (BF16, F16 or F32) to \
            F8_E4M3 with a <name>.weight_scale_inv F32 block scale, as DeepSeek-V3 stores them, and adds \
            quantization_config to config.json. Embeddings, lm_head, routers, norms, biases and tensors that \
            are already FP8 pass through unchanged. --to int4, nvfp4 and mxfp4 quantize the same weights (those whose \
            columns the group size divides) as llm-compressor's data-free W4A16 (--group-size), NVFP4A16 and MXFP4A16 \
            schemes do, bit for bit, in compressed-tensors' layout and with its quantization_config (gpt-oss: its own \
            MXFP4 layout). A weight already in another quantized format is decoded and quantized again, and the run \
            says per weight whether its values survived (--json: requantized). --to bf16 decodes every encoded weight, bit for bit as its \
            producing library does: FP8 blocks (scales found anywhere in the checkpoint), compressed-tensors \
            INT4/INT8, NVFP4, MXFP4 and FP8, gpt-oss MXFP4 experts; it drops their scales and removes \
            quantization_config (Docs/convert.md has the formats). \
            Each output shard is written under a temporary name and renamed when complete; the input is never written. \
            --json prints schema moetool.convert/1, or with --dry-run moetool.convert-plan/1 (see Docs/convert.md); \
            --threads is for the block math; a --shards worker reports the tensors of its own shards.
            """)

    @Argument(help: "The input: a .safetensors file, a checkpoint directory, or a model id (org/name) in the Hugging Face cache.")
    var input: String

    @Argument(help: "The output directory (new or empty).")
    var output: String

    @OptionGroup var source: CheckpointSource

    @Option(help: "fp8, bf16, int4, nvfp4 or mxfp4.")
    var to: ConversionTarget

    @Option(help: ArgumentHelp("With --to int4: columns per scale, 32, 64 or 128 (default 128).", valueName: "n"))
    var groupSize: Int?

    @Option(help: "With --to fp8: float32 (DeepSeek-V3) or ue8m0 (scales rounded up to powers of two, DeepSeek-V3.1).")
    var scaleFormat: BlockQuantization.ScaleFormat = .float32

    @Option(help: ArgumentHelp("Also quantize 2-D tensors whose name matches (POSIX extended regex).", valueName: "regex"))
    var include: String?

    @Option(help: ArgumentHelp("Never quantize tensors whose name matches (POSIX extended regex).", valueName: "regex"))
    var exclude: String?

    @Flag(help: "List each tensor with its action and the reason, and write nothing.")
    var dryRun = false

    @Flag(help: "Continue an interrupted conversion into OUT: verified finished shards are kept, the rest redone.")
    var resume = false

    @Option(help: ArgumentHelp("Convert only every n-th shard starting at the i-th (1-based), for n workers sharing OUT; then run --finalize.", valueName: "i/n"))
    var shards: String?

    @Flag(help: "After --shards workers: verify every shard in OUT and write the index, config.json and other files.")
    var finalize = false

    @Flag(help: "Let blocks holding NaN or infinity become NaN instead of refusing the tensor.")
    var allowNonfinite = false

    @OptionGroup var common: CommonOptions

    var json: Bool { common.json }
    var quiet: Bool { common.quiet }
    var threads: Int { common.threads }

    /// `--shards i/n` as (i, n).
    var shardSelection: (index: Int, count: Int)? {
        guard let shards else { return nil }
        let parts = shards.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 1, i <= n else { return nil }
        return (i, n)
    }

    var mode: CheckpointConversion.Mode {
        if let s = shardSelection { return .shards(index: s.index, count: s.count) }
        if finalize { return .finalize }
        return resume ? .resume : .full
    }

    func validate() throws {
        if shards != nil && shardSelection == nil { throw ValidationError("--shards takes i/n with 1 <= i <= n, e.g. 2/8") }
        if [resume, shards != nil, finalize].filter({ $0 }).count > 1 {
            throw ValidationError("--resume, --shards and --finalize are separate steps: give one")
        }
        if to != .fp8 && scaleFormat != .float32 { throw ValidationError("--scale-format applies to --to fp8 only") }
        if let groupSize {
            guard to == .int4 else { throw ValidationError("--group-size applies to --to int4 only (NVFP4 groups are 16 columns, MXFP4 groups 32)") }
            guard FourBitQuantization.int4GroupSizes.contains(groupSize) else {
                throw ValidationError("--group-size must be one of \(FourBitQuantization.int4GroupSizes.map(String.init).joined(separator: ", ")) (what vLLM's INT4 kernels run)")
            }
        }
        if to == .bf16 && (include != nil || exclude != nil) {
            throw ValidationError("--include and --exclude choose what --to fp8 quantizes; --to bf16 dequantizes every FP8 block weight")
        }
        if dryRun && (resume || shards != nil || finalize) {
            throw ValidationError("--dry-run writes nothing, so --resume, --shards and --finalize have nothing to do: give one or the other")
        }
        for pattern in [include, exclude].compactMap({ $0 }) {
            do { _ = try NameFilter(pattern) } catch { throw ValidationError("\(error)") }
        }
    }

    func run() throws {
        let located = try source.locate(input)
        let checkpoint: Checkpoint
        do {
            checkpoint = try Checkpoint(path: located)
        } catch {
            throw CommandError("invalid_input", "\(escapeForDisplay(input)): invalid input (\(counted(error.problems.count, "problem"))), nothing converted",
                               hint: "fix the problems listed (moetool inspect shows the same with --json)",
                               details: error.problems.prefix(200).map(\.description))
        }
        var options = ConversionOptions(target: to)
        options.scaleFormat = scaleFormat
        options.groupSize = groupSize ?? 128
        options.allowNonFinite = allowNonfinite
        options.threads = threads
        options.selection = TensorSelection(include: try include.map { try NameFilter($0) },
                                            exclude: try exclude.map { try NameFilter($0) })
        do {
            let plan = try ConversionPlan(checkpoint: checkpoint, options: options)
            if dryRun {
                printPlan(plan)
                if let why = plan.nothingToConvert(target: to) { FileHandleOutput.stderr("note: \(why)\n") }
                return
            }
            // A run that changes no tensor would only copy the checkpoint: say so, and write nothing.
            if let why = plan.nothingToConvert(target: to), mode != .finalize {
                throw CommandError("nothing_to_convert", "\(escapeForDisplay(located)): \(why); nothing was written")
            }
            let bar = ProgressBar(label: "convert", total: checkpoint.dataBytes, quiet: quiet)
            let summary = try CheckpointConversion.run(checkpoint: checkpoint, output: output, plan: plan, options: options,
                                                       mode: mode, progress: { bar.advance($0) })
            bar.finish()
            printSummary(summary)
        } catch let e as ConversionError {
            throw CommandError(e)
        }
    }

    func printPlan(_ plan: ConversionPlan) {
        if json {
            FileHandleOutput.document(JSONSerializer.pretty(.object(JSONObject([
                ("schema", "moetool.convert-plan/1"), ("input", .string(input)), ("to", .string(to.rawValue)),
                ("tensors", .array(plan.decisions.map { d in
                    .object(JSONObject([
                        ("name", .string(d.name)), ("dtype", .string(d.dtype.rawValue)), ("shape", .array(d.shape.map { .uint($0) })),
                        ("action", .string(d.action.kind.rawValue)), ("reason", .string(d.action.reason)),
                    ]))
                })),
            ]))))
            return
        }
        let width = min(90, plan.decisions.map { escapeForDisplay($0.name).count }.max() ?? 4)
        var out = ""
        for d in plan.decisions {
            out += escapeForDisplay(d.name).leftAligned(width, truncating: true)
            out += "  " + d.action.kind.rawValue.leftAligned(12, truncating: true) + "  " + d.action.reason + "\n"
        }
        out += "\n\(plan.count(.quantize)) to quantize, \(plan.count(.dequantize)) to dequantize, "
            + "\(plan.count(.passThrough)) unchanged, \(plan.count(.drop)) dropped\n"
        FileHandleOutput.stdout(out)
    }

    func printSummary(_ s: CheckpointConversion.Summary) {
        if json {
            FileHandleOutput.document(JSONSerializer.pretty(.object(JSONObject([
                ("schema", "moetool.convert/1"), ("input", .string(input)), ("output", .string(output)), ("to", .string(to.rawValue)),
                ("finalized", .bool(s.finalized)),
                ("quantized", .int(s.quantized)), ("dequantized", .int(s.dequantized)),
                ("passed_through", .int(s.passedThrough)), ("dropped", .int(s.dropped)),
                ("bytes_in", .uint(s.bytesIn)), ("bytes_out", .uint(s.bytesOut)),
                ("left_out", .array(s.leftOut.map { .object(JSONObject([("name", .string($0.name)), ("reason", .string($0.reason))])) })),
                ("requantized", .array(s.requantized.map { l in
                    .object(JSONObject([
                        ("name", .string(l.name)), ("from", .string(l.from)), ("lossless", .bool(l.lossless)),
                        ("max_abs_error", .double(Double(l.maxAbsError))), ("changed_values", .int(l.changed)), ("values", .int(l.values)),
                    ]))
                })),
                ("shards", .array(s.shards.map { r in
                    .object(JSONObject([
                        ("name", .string(r.name)), ("bytes_in", .uint(r.bytesIn)), ("bytes_out", .uint(r.bytesOut)),
                        ("seconds", .double(r.seconds)), ("resumed", .bool(r.resumed)),
                    ]))
                })),
            ]))))
            return
        }
        let resumed = s.shards.filter(\.resumed).count
        var line = "\(escapeForDisplay(input)) -> \(escapeForDisplay(output)) (\(to.rawValue)): "
        line += "\(counted(s.shards.count - resumed, "shard")) converted" + (resumed > 0 ? ", \(resumed) kept from an earlier run" : "")
        line += "; \(s.quantized) quantized, \(s.dequantized) dequantized, \(s.passedThrough) unchanged, \(s.dropped) dropped"
        if !s.leftOut.isEmpty { line += "; \(s.leftOut.count) left out (below)" }
        line += s.finalized ? "; checkpoint complete\n" : "; run --finalize when every worker is done\n"
        FileHandleOutput.stdout(line)
        for item in s.leftOut { FileHandleOutput.stdout("left out: \(escapeForDisplay(item.name)): \(item.reason)\n") }
        printLosses(s.requantized)
    }

    /// Weights re-quantized from another format: how many kept their values exactly, and what the others lost.
    func printLosses(_ losses: [RequantizationLoss]) {
        guard !losses.isEmpty else { return }
        let lossy = losses.filter { !$0.lossless }
        var out = "re-quantized from another format: \(losses.count - lossy.count) of \(counted(losses.count, "weight")) unchanged (every value the same)"
        if lossy.isEmpty {
            FileHandleOutput.stdout(out + "\n")
            return
        }
        out += "; \(lossy.count) lossy:\n"
        let width = min(90, lossy.map { escapeForDisplay($0.name).count }.max() ?? 4)
        for l in lossy.sorted(by: { $0.maxAbsError > $1.maxAbsError }).prefix(quiet ? 0 : 20) {
            let share = Double(l.changed) / Double(max(l.values, 1)) * 100
            out += "  " + escapeForDisplay(l.name).leftAligned(width, truncating: true)
                + "  max abs error \(significantText(Double(l.maxAbsError), digits: 3)), \(fixedText(share, places: 2))% of values changed\n"
        }
        if lossy.count > 20 && !quiet { out += "  ... and \(lossy.count - 20) more (--json lists every weight)\n" }
        FileHandleOutput.stdout(out)
    }
}
