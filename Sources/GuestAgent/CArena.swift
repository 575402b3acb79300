#if canImport(Glibc)
import Glibc
#endif

/// C memory for one call into the container C code: every string and array it hands out lives
/// until the arena is released, so a `cl_*_config` can be filled field by field instead of in
/// nested `with…` closures. Not thread-safe; use it within one synchronous scope.
final class CArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    deinit { for b in blocks { Glibc.free(b) } }

    func string(_ s: String) -> UnsafePointer<CChar> {
        let p = strdup(s)!
        blocks.append(UnsafeMutableRawPointer(p))
        return UnsafePointer(p)
    }

    func optionalString(_ s: String?) -> UnsafePointer<CChar>? { s.map { string($0) } }

    /// A NULL-terminated `char *[]`.
    func strings(_ list: [String]) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> {
        let array = array(list.map { UnsafeMutablePointer(mutating: string($0)) as UnsafeMutablePointer<CChar>? } + [nil])
        return UnsafeMutablePointer(mutating: array)
    }

    /// The same list as `const char *const *`.
    func constStrings(_ list: [String]) -> UnsafePointer<UnsafePointer<CChar>?> {
        UnsafeRawPointer(strings(list)).assumingMemoryBound(to: UnsafePointer<CChar>?.self)
    }

    /// A copy of `values` (never NULL, even when empty).
    func array<T>(_ values: [T]) -> UnsafePointer<T> {
        let raw = malloc(max(1, values.count) * MemoryLayout<T>.stride)!
        blocks.append(raw)
        let typed = raw.bindMemory(to: T.self, capacity: max(1, values.count))
        for (i, v) in values.enumerated() { (typed + i).initialize(to: v) }
        return UnsafePointer(typed)
    }
}
