namespace Vmm;

/// <summary>The one family of expected failures: bad input from a user, a guest, a peer or a file, or the
/// host refusing something. The message is for a person and says what failed and, where it can, what to
/// change. Each thread boundary (a vCPU, the device thread, a control request, a migration, the command
/// line) catches this family as "that unit failed, for this reason"; any other exception reaching a
/// boundary is a bug in vmm, reported with its stack and ending only that unit.</summary>
public abstract class VmmException(string message, Exception? inner = null) : Exception(message, inner);
