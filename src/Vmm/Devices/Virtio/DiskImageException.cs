namespace Vmm.Devices.Virtio;

/// <summary>A disk image could not be read or written outside the guest's own requests (which answer the
/// guest with IOERR instead): a copy of the image for a migration.</summary>
public sealed class DiskImageException(string message, Exception? inner = null) : VmmException(message, inner);
