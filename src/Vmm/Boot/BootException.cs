namespace Vmm.Boot;

/// <summary>The kernel or initramfs cannot be booted: a missing or unreadable file, a file that is not a
/// kernel or is truncated, an initramfs that does not fit. The message says what to change.</summary>
public sealed class BootException(string message, Exception? inner = null) : ConfigurationException(message, inner);
