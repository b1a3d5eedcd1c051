/// The vision and audio towers (and their projectors) of multimodal checkpoints, told by the name parts that put a
/// tensor in one (Llama 4, Qwen2/3-VL, Kimi-VL, LLaVA-style models): weights of the model that no text token goes
/// through, whose own `layers.N` are not the text model's. Inspection counts them apart; conversion leaves them as
/// they are.
public enum MultimodalTower {
    public static let nameParts: [StaticString] = [
        "vision_tower", "vision_model", "visual", "vision_encoder", "multi_modal_projector", "mm_projector",
        "audio_tower", "audio_model",
    ]

    /// Whether a dot-separated part of `name` is one of `nameParts`.
    public static func contains(_ name: String) -> Bool {
        name.split(separator: ".").contains { part in
            nameParts.contains { String(describing: $0) == part }
        }
    }
}
