namespace Vmm.Boot;

/// <summary>The guest cannot be booted as configured: a missing or unreadable file, a file that is not a
/// kernel, an initramfs that does not fit, too little memory. The message says what to change.</summary>
public sealed class BootException(string message, Exception? inner = null) : Exception(message, inner);
