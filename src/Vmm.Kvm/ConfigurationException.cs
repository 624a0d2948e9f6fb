namespace Vmm;

/// <summary>The VM cannot be built as asked: an option out of range, a file that is missing, unreadable or
/// not what it should be, a resource the host does not have. The message names the option or file.</summary>
public class ConfigurationException(string message, Exception? inner = null) : VmmException(message, inner);
