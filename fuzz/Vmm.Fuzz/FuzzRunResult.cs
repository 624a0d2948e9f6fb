namespace Vmm.Fuzz;

/// <summary>What one fuzz input did: chains completed, and the queue's message if it rejected the guest.</summary>
public readonly record struct FuzzRunResult(int ChainsCompleted, string? Rejection);
