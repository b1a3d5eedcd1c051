import Checkpoint

/// Bytes of one routed expert (all its projections, as stored), from a checkpoint's headers:
/// what each redundant replica of an expert costs a GPU (plan-experts' memory figure).
public enum RoutedExpertBytes {
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case noRoutedExperts
        case overflow

        public var description: String {
            switch self {
            case .noRoutedExperts: return "no routed expert tensors found"
            case .overflow: return "the routed experts' tensors add up to more than 2^64 bytes"
            }
        }
    }

    /// The routed experts' tensors added up over (MoE layers seen x experts per layer), the
    /// experts per layer being the highest expert index + 1, or a fused tensor's first
    /// dimension. 0 when layers x experts pass 2^64 (no division is meaningful then).
    public static func perExpert(in checkpoint: Checkpoint) throws(Failure) -> UInt64 {
        var bytes: UInt64 = 0
        var layers = Set<Int>()
        var expertsSeen: UInt64 = 0
        for t in checkpoint.allTensors {
            let role = TensorRole.classify(t.tensor.name)
            guard role.kind == .routedExpert else { continue }
            let (sum, overflow) = bytes.addingReportingOverflow(t.tensor.byteCount)
            if overflow { throw .overflow }
            bytes = sum
            if let l = role.layer { layers.insert(l) }
            if let e = role.expert { expertsSeen = max(expertsSeen, UInt64(e) + 1) }
            if role.fused, let first = t.tensor.shape.first { expertsSeen = max(expertsSeen, first) }
        }
        guard bytes > 0, !layers.isEmpty, expertsSeen > 0 else { throw .noRoutedExperts }
        let (experts, overflow) = UInt64(layers.count).multipliedReportingOverflow(by: expertsSeen)
        return overflow ? 0 : bytes / experts
    }
}
