/// The CRI annotations that group containers into sandboxes (one VM per pod).
public enum ContainerType: String, Sendable, Hashable {
    /// The pod's sandbox ("pause") container: it boots the VM.
    case sandbox
    /// A container of an existing pod: it joins the sandbox's VM.
    case container
}

extension Spec {
    public static let containerTypeAnnotation = "io.kubernetes.cri.container-type"
    public static let sandboxIDAnnotation = "io.kubernetes.cri.sandbox-id"

    /// From `io.kubernetes.cri.container-type`; a spec without it (ctr, nerdctl) is its own
    /// sandbox.
    public var containerType: ContainerType {
        annotations?[Self.containerTypeAnnotation].flatMap(ContainerType.init(rawValue:)) ?? .sandbox
    }

    /// From `io.kubernetes.cri.sandbox-id`: the pod a `.container` belongs to.
    public var sandboxID: String? {
        annotations?[Self.sandboxIDAnnotation]
    }
}
