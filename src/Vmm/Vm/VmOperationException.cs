namespace Vmm.Vm;

/// <summary>The VM cannot do what was asked now: save its state while it runs, pause when it has stopped,
/// or a pause whose vCPUs did not stop in time (the VM then runs on as before).</summary>
public sealed class VmOperationException(string message) : VmmException(message);
