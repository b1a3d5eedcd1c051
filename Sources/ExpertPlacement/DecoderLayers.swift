/// Which of a model's decoder layers route tokens to experts (the rest are dense), in model
/// order: what maps a serving engine's per-decoder-layer rows (SGLang's recorder and its
/// `--init-expert-location` file have `num_hidden_layers` rows, dense layers included) to the
/// MoE layers a profile and a plan have.
public struct DecoderLayers: Sendable, Equatable {
    /// [decoder layer]: true where the layer has routed experts.
    public let isMoE: [Bool]

    public init(isMoE: [Bool]) {
        self.isMoE = isMoE
    }

    public var count: Int { isMoE.count }
    /// The decoder layer of each MoE layer, in order.
    public var moeLayers: [Int] { isMoE.indices.filter { isMoE[$0] } }
    public var denseLayers: [Int] { isMoE.indices.filter { !isMoE[$0] } }

    /// `0, 1, 2, 5-7`: layer numbers as ranges, for messages.
    public static func describe(_ layers: [Int]) -> String {
        var parts: [String] = []
        var i = 0
        while i < layers.count {
            var j = i
            while j + 1 < layers.count && layers[j + 1] == layers[j] + 1 { j += 1 }
            parts.append(j > i ? "\(layers[i])-\(layers[j])" : "\(layers[i])")
            i = j + 1
        }
        return parts.joined(separator: ", ")
    }
}
