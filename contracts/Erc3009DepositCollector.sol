// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

interface IERC3009Receive {
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes calldata signature
    ) external;
}

/// @title Erc3009DepositCollector
/// @notice Pulls a `batch-settlement` deposit with the payer's ERC-3009 `ReceiveWithAuthorization`
///         (signed to this collector, as the x402 EVM package signs it) and forwards it to the settlement
///         contract, which credits the channel after checking its balance grew.
/// @dev The authorization's nonce is keccak256(abi.encode(channelId, salt)): a signature deposits
///      into one channel only. `receiveWithAuthorization` requires the caller to be the recipient,
///      so nobody can take the authorization to pay elsewhere, and `collect` answers only the
///      settlement contract, so nobody can use it to pull deposits here directly.
///      The settlement address is an immutable (part of the runtime code): the code may be copied
///      to another address with `anvil_setCode`; no constructor storage is involved.
contract Erc3009DepositCollector {
    /// @notice The settlement contract this collector serves.
    address public immutable settlement;

    error NotSettlement();
    error ZeroSettlement();
    error ForwardFailed();

    constructor(address settlement_) {
        if (settlement_ == address(0)) revert ZeroSettlement();
        settlement = settlement_;
    }

    /// @param collectorData abi.encode(uint256 validAfter, uint256 validBefore, uint256 salt, bytes signature)
    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external
    {
        if (msg.sender != settlement) revert NotSettlement();
        (uint256 validAfter, uint256 validBefore, uint256 salt, bytes memory signature) =
            abi.decode(collectorData, (uint256, uint256, uint256, bytes));
        bytes32 nonce = keccak256(abi.encode(channelId, salt));
        IERC3009Receive(token).receiveWithAuthorization(
            payer, address(this), amount, validAfter, validBefore, nonce, signature
        );
        (bool ok, bytes memory returned) = token.call(abi.encodeWithSelector(0xa9059cbb, settlement, amount));
        if (!ok || (returned.length != 0 && !abi.decode(returned, (bool)))) revert ForwardFailed();
    }
}
