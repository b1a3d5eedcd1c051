import ArgumentParser
import Checkpoint
import Conversion
import NumberFormats
import SafetensorsFormat
import StrictJSON

extension ConversionTarget: ExpressibleByArgument {}
extension BlockQuantization.ScaleFormat: ExpressibleByArgument {}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Re-quantize a checkpoint to FP8 with 128x128 block scales, or back to BF16.",
        discussion: """
            --to fp8 quantizes the 2-D weights of attention and MLP/expert projections (BF16, F16 or F32) to \\
            F8_E4M3 with a <name>.weight_scale_inv F32 block scale, as DeepSeek-V3 stores them, and adds \\
            quantization_config to config.json. Embeddings, lm_head, routers, norms, biases and tensors that \\
            are already FP8 pass through unchanged. --to bf16 dequantizes FP8 block weights (scales found \\
            anywhere in the checkpoint, also compressed-tensors' weight_scale) and removes quantization_config. \\
            Each output shard is written under a temporary name and renamed when complete; the input is never written.
            """)

    @Argument(help: "The input: a .safetensors file or a checkpoint directory.")
    var input: String

    @Argument(help: "The output directory (new or empty).")
    var output: String

    @Option(help: "fp8 or bf16.")
    var to: ConversionTarget

    @Option(help: "With --to fp8: float32 (DeepSeek-V3) or ue8m0 (scales rounded up to powers of two, DeepSeek-V3.1).")
    var scaleFormat: BlockQuantization.ScaleFormat = .float32

    @Option(help: ArgumentHelp("Also quantize 2-D tensors whose name matches (POSIX extended regex).", valueName: "regex"))
    var include: String?

    @Option(help: ArgumentHelp("Never quantize tensors whose name matches (POSIX extended regex).", valueName: "regex"))
    var exclude: String?

    @Flag(help: "List each tensor with its action and the reason, and write nothing.")
    var dryRun = false

    @Flag(help: "Let blocks holding NaN or infinity become NaN instead of refusing the tensor.")
    var allowNonfinite = false

    @Option(help: "Threads for the block math (0: all cores).")
    var threads = 0

    @Flag(help: "Print a JSON summary (or, with --dry-run, the plan).")
    var json = false

    @Flag(name: .shortAndLong, help: "No progress bar.")
    var quiet = false

    func validate() throws {
        if threads < 0 { throw ValidationError("--threads must be 0 or more") }
        if to == .bf16 && scaleFormat != .float32 { throw ValidationError("--scale-format applies to --to fp8 only") }
        for pattern in [include, exclude].compactMap({ $0 }) {
            do { _ = try NameFilter(pattern) } catch { throw ValidationError("\(error)") }
        }
    }

    func run() throws {
        let checkpoint: Checkpoint
        do {
            checkpoint = try Checkpoint(path: input)
        } catch {
            for p in error.problems.prefix(200) { FileHandleOutput.stderr("error: \(p)\n") }
            FileHandleOutput.stderr("\(escapeForDisplay(input)): invalid input, nothing converted\n")
            throw ExitStatus.invalidInput
        }
        var options = ConversionOptions(target: to)
        options.scaleFormat = scaleFormat
        options.allowNonFinite = allowNonfinite
        options.threads = threads
        options.selection = TensorSelection(include: try include.map { try NameFilter($0) },
                                            exclude: try exclude.map { try NameFilter($0) })
        do {
            let plan = try ConversionPlan(checkpoint: checkpoint, options: options)
            if dryRun {
                printPlan(plan)
                return
            }
            let bar = ProgressBar(label: "convert", total: checkpoint.dataBytes, quiet: quiet)
            let summary = try CheckpointConversion.run(checkpoint: checkpoint, output: output, plan: plan, options: options,
                                                       progress: { bar.advance($0) })
            bar.finish()
            printSummary(summary)
        } catch let e as ConversionError {
            FileHandleOutput.stderr("error: \(e)\n")
            throw ExitStatus.invalidInput
        }
    }

    func printPlan(_ plan: ConversionPlan) {
        if json {
            FileHandleOutput.stdout(JSONSerializer.pretty(.array(plan.decisions.map { d in
                .object(JSONObject([
                    ("name", .string(d.name)), ("dtype", .string(d.dtype.rawValue)), ("shape", .array(d.shape.map { .uint($0) })),
                    ("action", .string(d.action.kind.rawValue)), ("reason", .string(d.action.reason)),
                ]))
            })))
            return
        }
        let width = min(90, plan.decisions.map { escapeForDisplay($0.name).count }.max() ?? 4)
        var out = ""
        for d in plan.decisions {
            out += escapeForDisplay(d.name).padding(toLength: width, withPad: " ", startingAt: 0)
            out += "  " + d.action.kind.rawValue.padding(toLength: 12, withPad: " ", startingAt: 0) + "  " + d.action.reason + "\n"
        }
        out += "\n\(plan.count(.quantize)) to quantize, \(plan.count(.dequantize)) to dequantize, "
            + "\(plan.count(.passThrough)) unchanged, \(plan.count(.drop)) dropped\n"
        FileHandleOutput.stdout(out)
    }

    func printSummary(_ s: CheckpointConversion.Summary) {
        if json {
            FileHandleOutput.stdout(JSONSerializer.pretty(.object(JSONObject([
                ("input", .string(input)), ("output", .string(output)), ("to", .string(to.rawValue)),
                ("shards", .int(s.shards)), ("quantized", .int(s.quantized)), ("dequantized", .int(s.dequantized)),
                ("passed_through", .int(s.passedThrough)), ("dropped", .int(s.dropped)),
                ("bytes_in", .uint(s.bytesIn)), ("bytes_out", .uint(s.bytesOut)),
            ]))))
            return
        }
        FileHandleOutput.stdout(
            "converted \(escapeForDisplay(input)) -> \(escapeForDisplay(output)) (\(to.rawValue)): \(s.shards) shard(s), "
                + "\(s.quantized) quantized, \(s.dequantized) dequantized, \(s.passedThrough) unchanged, \(s.dropped) dropped; "
                + "\(s.bytesIn) -> \(s.bytesOut) bytes of tensor data\n")
    }
}
