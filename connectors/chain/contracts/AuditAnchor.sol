// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title AuditAnchor
/// @notice Public anchor for the signed checkpoints of Pavilion's audit log (an RFC 6962
/// Merkle log). Each call emits one `Anchored` event and stores nothing: the event log is the
/// record, which keeps an anchor near the 21,000-gas floor of a transaction and lets anyone
/// read every anchor back over plain JSON-RPC (`eth_getLogs`).
/// @dev `originHash` is `keccak256(bytes(origin))` of the log's origin string, hashed off
/// chain so the calldata has a fixed size whatever the origin's length.
contract AuditAnchor {
    /// @notice A checkpoint (origin, tree size, root hash) was anchored.
    /// @param originHash keccak256 of the origin string's UTF-8 bytes; indexed so an auditor
    /// can fetch one log's anchors with a topic filter.
    event Anchored(bytes32 indexed originHash, uint64 treeSize, bytes32 root);

    /// @notice The caller is not the account that deployed this contract.
    error NotOwner();

    /// @notice The deployer, the only account allowed to anchor. Immutable: it lives in the
    /// code, so checking it costs no storage read.
    address public immutable owner;

    constructor() {
        owner = msg.sender;
    }

    /// @notice Anchors one checkpoint by emitting `Anchored`. Anchoring the same checkpoint
    /// twice is not rejected (that would need storage); the client looks for an existing
    /// event before it sends.
    function anchor(bytes32 originHash, uint64 treeSize, bytes32 root) external {
        if (msg.sender != owner) revert NotOwner();
        emit Anchored(originHash, treeSize, root);
    }
}
