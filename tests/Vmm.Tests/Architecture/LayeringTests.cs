using System.Reflection;
using System.Reflection.Emit;
using Xunit;

namespace Vmm.Tests.Architecture;

/// <summary>vmm's folders are layers, and a lower one never names a type of a higher one: KVM interop at the
/// bottom, then memory, arch, boot, devices, the VM, its state and snapshots, migration, control and the
/// command line. The test reads every type of vmm's assemblies, their signatures and the IL of their methods
/// (lambdas and iterators included), so a reference anywhere in the code counts; only constants, which the
/// compiler copies into the IL, are not seen.</summary>
public sealed class LayeringTests
{
    /// <summary>Bottom to top. A namespace may use its own types and those of every lower rank; two namespaces
    /// of the same rank are independent of each other.</summary>
    private static readonly Dictionary<string, int> Ranks = new()
    {
        ["Vmm"] = 0,                    // the failure family every layer shares
        ["Vmm.Kvm"] = 1,                // with its Interop: the P/Invoke declarations are part of that layer
        ["Vmm.Diagnostics"] = 2, ["Vmm.Serialization"] = 2,
        ["Vmm.Memory"] = 3,
        ["Vmm.Arch"] = 4,
        ["Vmm.Boot"] = 5,
        ["Vmm.Devices"] = 6,
        ["Vmm.Devices.Virtio"] = 7,
        ["Vmm.Vm"] = 8,
        ["Vmm.State"] = 9,
        ["Vmm.Snapshot"] = 10,
        ["Vmm.Migration"] = 11,
        ["Vmm.Replication"] = 12,
        ["Vmm.Control"] = 13,
        ["Vmm.Cli"] = 14,
    };

    private static readonly Assembly[] VmmAssemblies =
        [typeof(Vmm.Kvm.KvmSystem).Assembly, typeof(Vmm.Vm.Machine).Assembly, typeof(Vmm.Cli.Program).Assembly];

    [Fact]
    public void NoLayerNamesATypeOfAHigherLayer()
    {
        var violations = new SortedSet<string>();
        foreach (var type in VmmAssemblies.SelectMany(a => a.GetTypes()))
        {
            string from = LayerOf(type);
            foreach (var used in References(type).Where(t => VmmAssemblies.Contains(t.Assembly)))
            {
                string to = LayerOf(used);
                if (to != from && Ranks[to] >= Ranks[from]) violations.Add($"{from} -> {to}: {Name(type)} uses {Name(used)}");
            }
        }
        Assert.True(violations.Count == 0, "lower layers reach up:\n" + string.Join("\n", violations));
    }

    [Fact]
    public void EveryNamespaceHasALayer()
    {
        var unranked = VmmAssemblies.SelectMany(a => a.GetTypes()).Select(LayerOf).Where(n => !Ranks.ContainsKey(n)).Distinct().ToList();
        Assert.True(unranked.Count == 0, "give these namespaces a rank: " + string.Join(", ", unranked));
    }

    [Fact]
    public void TheCheckSeesReferencesInsideMethodBodies()
    {
        // Types used only inside method bodies, one of them only in a lambda (a nested closure type).
        var inBodies = VmmAssemblies.SelectMany(a => a.GetTypes())
            .Where(t => t.FullName == "Vmm.Vm.MachineBuilder" || t.DeclaringType?.FullName == "Vmm.Vm.MachineBuilder")
            .SelectMany(References).Select(t => t.FullName).ToHashSet();
        Assert.Contains("Vmm.Devices.BootTimer", inBodies);
        Assert.Contains("Vmm.Vm.VmStop", inBodies);
    }

    private static string LayerOf(Type type)
    {
        while (type.DeclaringType is not null) type = type.DeclaringType;
        // The compiler's helper types (<PrivateImplementationDetails>) have no namespace: they belong to no layer.
        string name = type.Namespace ?? "Vmm";
        return name == "Vmm.Kvm.Interop" ? "Vmm.Kvm" : name;
    }

    private static string Name(Type type) => type.FullName ?? type.Name;

    private static IEnumerable<Type> References(Type type)
    {
        var found = new HashSet<Type>();
        void Add(Type? t)
        {
            if (t is null) return;
            if (t.HasElementType)
            {
                Add(t.GetElementType());
                return;
            }
            if (t.IsGenericParameter || !found.Add(t)) return;
            if (t.IsGenericType && !t.IsGenericTypeDefinition)
            {
                Add(t.GetGenericTypeDefinition());
                foreach (var argument in t.GetGenericArguments()) Add(argument);
            }
        }

        const BindingFlags All = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        Add(type.BaseType);
        foreach (var i in type.GetInterfaces()) Add(i);
        foreach (var field in type.GetFields(All)) Add(field.FieldType);
        foreach (var property in type.GetProperties(All)) Add(property.PropertyType);
        foreach (var method in type.GetMethods(All).Cast<MethodBase>().Concat(type.GetConstructors(All)))
        {
            if (method is MethodInfo info) Add(info.ReturnType);
            foreach (var parameter in method.GetParameters()) Add(parameter.ParameterType);
            foreach (var used in TypesUsedInBody(method)) Add(used);
        }
        return found;
    }

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes)
        .GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!)
        .ToDictionary(o => o.Value);

    /// <summary>The types a method body names: through the methods it calls, the fields it touches, the types
    /// it creates, casts to or loads tokens of.</summary>
    private static IEnumerable<Type> TypesUsedInBody(MethodBase method)
    {
        byte[]? il;
        try { il = method.GetMethodBody()?.GetILAsByteArray(); }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException) { il = null; }
        if (il is null) yield break;
        var module = method.Module;
        Type[]? typeArguments = method.DeclaringType is { IsGenericType: true } d ? d.GetGenericArguments() : null;
        Type[]? methodArguments = method.IsGenericMethod ? method.GetGenericArguments() : null;
        int position = 0;
        while (position < il.Length)
        {
            short value = il[position++];
            if (value == 0xfe) value = unchecked((short)(0xfe00 | il[position++]));
            var opCode = OpCodesByValue[value];
            int operandBytes = opCode.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, position),
                _ => 4,
            };
            if (opCode.OperandType is OperandType.InlineMethod or OperandType.InlineField or OperandType.InlineType or OperandType.InlineTok)
            {
                int token = BitConverter.ToInt32(il, position);
                MemberInfo? member;
                try { member = module.ResolveMember(token, typeArguments, methodArguments); }
                catch (ArgumentException) { member = null; }
                switch (member)
                {
                    case Type t: yield return t; break;
                    case FieldInfo f:
                        if (f.DeclaringType is { } fieldOwner) yield return fieldOwner;
                        yield return f.FieldType;
                        break;
                    case MethodBase m:
                        if (m.DeclaringType is { } methodOwner) yield return methodOwner;
                        if (m is MethodInfo { IsGenericMethod: true } generic)
                            foreach (var argument in generic.GetGenericArguments()) yield return argument;
                        break;
                }
            }
            position += operandBytes;
        }
    }
}
