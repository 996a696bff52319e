// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

/// @notice Pulls a deposit from its payer into the settlement contract (one collector per transfer method).
interface IDepositCollector {
    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external;
}

interface IERC20Like {
    function balanceOf(address account) external view returns (uint256);
}

interface IERC1271 {
    function isValidSignature(bytes32 digest, bytes calldata signature) external view returns (bytes4);
}

/// @title BatchSettlement
/// @notice This project's payment-channel contract for the x402 `batch-settlement` scheme, written to
///         the ABI and EIP-712 types that the x402 EVM package ships (`batchSettlementABI`, domain
///         {name: "x402 Batch Settlement", version: "1"}).
///
///         A payer deposits into a channel once; each paid request then carries a cumulative voucher
///         (channelId, maxClaimableAmount) signed off chain. The receiver side claims the newest
///         vouchers of many channels in one transaction (accounting only), `settle` later pays the
///         claimed total to the receiver in one transfer, and unclaimed escrow goes back to the payer
///         by a cooperative refund or, without the receiver, by a timed withdrawal.
///
///         Per channel: `balance` = deposited − refunded − withdrawn, `totalClaimed` ≤ `balance`
///         (claimed funds stay counted in `balance`; settlement moves them out per receiver). The
///         token held here is Σ balance − Σ totalSettled.
/// @dev No constructor and no storage written at deployment: the runtime code is copied to the
///      package's fixed address with `anvil_setCode`. The EIP-712 domain separator is computed on
///      each use from block.chainid and address(this); the reentrancy lock is transient (EIP-1153).
contract BatchSettlement {
    // ------------------------------------------------------------------ types

    /// @notice The immutable terms of a channel; their EIP-712 hash is the channel id.
    struct ChannelConfig {
        address payer;
        /// @dev EOA that signs vouchers, or zero: then `payer` signs (ECDSA or ERC-1271).
        address payerAuthorizer;
        address receiver;
        /// @dev Signs claim batches and refunds for the receiver (EOA or ERC-1271); never zero.
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
    }

    struct Voucher {
        ChannelConfig channel;
        uint128 maxClaimableAmount;
    }

    /// @notice A payer-signed voucher and the cumulative total the receiver claims with it.
    struct VoucherClaim {
        Voucher voucher;
        bytes signature;
        uint128 totalClaimed;
    }

    struct ChannelState {
        uint128 balance;
        uint128 totalClaimed;
    }

    struct Withdrawal {
        uint128 amount;
        /// @dev Zero when no withdrawal is pending.
        uint40 initiatedAt;
    }

    struct ReceiverTotals {
        uint128 totalClaimed;
        uint128 totalSettled;
    }

    // ------------------------------------------------------------------ constants

    uint40 public constant MIN_WITHDRAW_DELAY = 15 minutes;
    uint40 public constant MAX_WITHDRAW_DELAY = 30 days;

    bytes32 public constant CHANNEL_CONFIG_TYPEHASH = keccak256(
        "ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)"
    );
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint128 maxClaimableAmount)");
    bytes32 public constant REFUND_TYPEHASH = keccak256("Refund(bytes32 channelId,uint256 nonce,uint128 amount)");
    bytes32 public constant CLAIM_ENTRY_TYPEHASH =
        keccak256("ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)");
    bytes32 public constant CLAIM_BATCH_TYPEHASH = keccak256(
        "ClaimBatch(ClaimEntry[] claims)ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
    );

    bytes32 private constant EIP712_DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("x402 Batch Settlement");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// @dev secp256k1 group order divided by two: larger s values are the malleable twin.
    uint256 private constant HALF_CURVE_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    bytes4 private constant ERC1271_MAGIC_VALUE = 0x1626ba7e;

    // ------------------------------------------------------------------ storage

    mapping(bytes32 channelId => ChannelState) public channels;
    mapping(bytes32 channelId => Withdrawal) public pendingWithdrawals;
    mapping(address receiver => mapping(address token => ReceiverTotals)) public receivers;
    /// @notice The nonce the next `refundWithSignature` must carry; every refund advances it.
    mapping(bytes32 channelId => uint256) public refundNonce;

    bool private transient _locked;

    // ------------------------------------------------------------------ events and errors

    event ChannelCreated(bytes32 indexed channelId, ChannelConfig config);
    event ChannelClosed(bytes32 indexed channelId, ChannelConfig config);
    event Deposited(bytes32 indexed channelId, address indexed sender, uint128 amount, uint128 newBalance);
    event Claimed(bytes32 indexed channelId, address indexed sender, uint128 claimAmount, uint128 newTotalClaimed);
    event Settled(address indexed receiver, address indexed token, address indexed sender, uint128 amount);
    event Refunded(bytes32 indexed channelId, address indexed sender, uint128 amount);
    event WithdrawInitiated(bytes32 indexed channelId, uint128 amount, uint40 finalizeAfter);
    event WithdrawFinalized(bytes32 indexed channelId, address indexed sender, uint128 amount);

    error Reentered();
    error InvalidChannel();
    error WithdrawDelayOutOfRange();
    error ZeroAmount();
    error InvalidCollector();
    error BalanceOverflow();
    error DepositNotReceived();
    error EmptyBatch();
    error NotReceiverSide();
    error NotPayerSide();
    error InvalidSignature();
    error AuthorizerMismatch();
    error ClaimAboveVoucher();
    error ClaimAboveBalance();
    error WithdrawalPending();
    error NoWithdrawalPending();
    error WithdrawDelayNotElapsed();
    error AmountAboveAvailable();
    error InvalidRefundNonce();
    error TokenTransferFailed();

    modifier nonReentrant() {
        if (_locked) revert Reentered();
        _locked = true;
        _;
        _locked = false;
    }

    // ------------------------------------------------------------------ deposit

    /// @notice Credits `amount` to the channel of `config`, pulled from the payer by `collector`.
    /// @dev The collector does the pull (ERC-3009, Permit2, …); the credit stands only if this
    ///      contract's token balance grew by exactly `amount` during the call.
    function deposit(ChannelConfig calldata config, uint128 amount, address collector, bytes calldata collectorData)
        external
        nonReentrant
    {
        _requireOpenableConfig(config);
        if (amount == 0) revert ZeroAmount();
        if (collector == address(0)) revert InvalidCollector();
        bytes32 channelId = getChannelId(config);
        ChannelState storage ch = channels[channelId];
        uint256 newBalance = uint256(ch.balance) + amount;
        if (newBalance > type(uint128).max) revert BalanceOverflow();

        IERC20Like token = IERC20Like(config.token);
        uint256 heldBefore = token.balanceOf(address(this));
        IDepositCollector(collector).collect(config.payer, config.token, amount, channelId, collectorData);
        if (token.balanceOf(address(this)) != heldBefore + amount) revert DepositNotReceived();

        bool opens = ch.balance == 0 && ch.totalClaimed == 0;
        ch.balance = uint128(newBalance);
        if (opens) emit ChannelCreated(channelId, config);
        emit Deposited(channelId, msg.sender, amount, uint128(newBalance));
    }

    // ------------------------------------------------------------------ claim and settle

    /// @notice Applies voucher claims sent by the receiver or receiver authorizer of every row.
    function claim(VoucherClaim[] calldata voucherClaims) external nonReentrant {
        if (voucherClaims.length == 0) revert EmptyBatch();
        for (uint256 i = 0; i < voucherClaims.length; ++i) {
            if (!_isReceiverSide(msg.sender, voucherClaims[i].voucher.channel)) revert NotReceiverSide();
            _applyClaim(voucherClaims[i]);
        }
    }

    /// @notice Applies voucher claims authorized by one receiver authorizer's EIP-712 `ClaimBatch`
    ///         signature; anyone may relay it.
    function claimWithSignature(VoucherClaim[] calldata voucherClaims, bytes calldata authorizerSignature)
        external
        nonReentrant
    {
        if (voucherClaims.length == 0) revert EmptyBatch();
        address authorizer = voucherClaims[0].voucher.channel.receiverAuthorizer;
        if (!_isValidSignature(authorizer, getClaimBatchDigest(voucherClaims), authorizerSignature)) {
            revert InvalidSignature();
        }
        for (uint256 i = 0; i < voucherClaims.length; ++i) {
            if (voucherClaims[i].voucher.channel.receiverAuthorizer != authorizer) revert AuthorizerMismatch();
            _applyClaim(voucherClaims[i]);
        }
    }

    /// @notice Pays `receiver` everything claimed for it in `token` and not yet paid. Anyone may call.
    function settle(address receiver, address token) external nonReentrant {
        ReceiverTotals storage totals = receivers[receiver][token];
        uint128 amount = totals.totalClaimed - totals.totalSettled;
        if (amount == 0) return;
        totals.totalSettled = totals.totalClaimed;
        _pay(token, receiver, amount);
        emit Settled(receiver, token, msg.sender, amount);
    }

    // ------------------------------------------------------------------ timed withdrawal (payer side)

    /// @notice Starts the payer's withdrawal of unclaimed escrow; it completes after `withdrawDelay`,
    ///         which leaves the receiver side that long to claim the vouchers it holds.
    function initiateWithdraw(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        _requirePayerSide(config);
        if (amount == 0) revert ZeroAmount();
        bytes32 channelId = getChannelId(config);
        Withdrawal storage pending = pendingWithdrawals[channelId];
        if (pending.initiatedAt != 0) revert WithdrawalPending();
        if (amount > _unclaimed(channels[channelId])) revert AmountAboveAvailable();
        pending.amount = amount;
        pending.initiatedAt = uint40(block.timestamp);
        emit WithdrawInitiated(channelId, amount, uint40(block.timestamp) + config.withdrawDelay);
    }

    /// @notice Completes a withdrawal once its delay has passed, capped to what is still unclaimed.
    function finalizeWithdraw(ChannelConfig calldata config) external nonReentrant {
        _requirePayerSide(config);
        bytes32 channelId = getChannelId(config);
        Withdrawal storage pending = pendingWithdrawals[channelId];
        if (pending.initiatedAt == 0) revert NoWithdrawalPending();
        if (block.timestamp < uint256(pending.initiatedAt) + config.withdrawDelay) revert WithdrawDelayNotElapsed();
        ChannelState storage ch = channels[channelId];
        uint128 available = _unclaimed(ch);
        uint128 amount = pending.amount < available ? pending.amount : available;
        delete pendingWithdrawals[channelId];
        ch.balance -= amount;
        emit WithdrawFinalized(channelId, msg.sender, amount);
        if (ch.balance == 0 && ch.totalClaimed == 0) emit ChannelClosed(channelId, config);
        if (amount > 0) _pay(config.token, config.payer, amount);
    }

    // ------------------------------------------------------------------ cooperative refund (receiver side)

    /// @notice Returns up to `amount` of unclaimed escrow to the payer, sent by the receiver side.
    function refund(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        if (!_isReceiverSide(msg.sender, config)) revert NotReceiverSide();
        _refund(config, getChannelId(config), amount);
    }

    /// @notice The same refund authorized by the receiver authorizer's EIP-712 `Refund` signature
    ///         at the channel's current `refundNonce`; anyone may relay it.
    function refundWithSignature(
        ChannelConfig calldata config,
        uint128 amount,
        uint256 nonce,
        bytes calldata receiverAuthorizerSignature
    ) external nonReentrant {
        bytes32 channelId = getChannelId(config);
        if (nonce != refundNonce[channelId]) revert InvalidRefundNonce();
        if (!_isValidSignature(config.receiverAuthorizer, getRefundDigest(channelId, nonce, amount), receiverAuthorizerSignature)) {
            revert InvalidSignature();
        }
        _refund(config, channelId, amount);
    }

    // ------------------------------------------------------------------ batching

    /// @notice Runs several calls on this contract in one transaction (e.g. claim then refund);
    ///         each keeps its own `msg.sender`. Reverts with the first failing call's error.
    function multicall(bytes[] calldata data) external returns (bytes[] memory results) {
        results = new bytes[](data.length);
        for (uint256 i = 0; i < data.length; ++i) {
            (bool ok, bytes memory returned) = address(this).delegatecall(data[i]);
            if (!ok) {
                assembly ("memory-safe") {
                    revert(add(returned, 0x20), mload(returned))
                }
            }
            results[i] = returned;
        }
    }

    // ------------------------------------------------------------------ EIP-712 views

    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(abi.encode(EIP712_DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    /// @notice The channel id: the EIP-712 hash of `config` under this contract's domain, so the same
    ///         terms name a different channel on another chain or contract.
    function getChannelId(ChannelConfig calldata config) public view returns (bytes32) {
        // abi.encode of a struct of static fields is its fields' words in order: the EIP-712 encodeData.
        return _typedDataHash(keccak256(abi.encode(CHANNEL_CONFIG_TYPEHASH, config)));
    }

    function getVoucherDigest(bytes32 channelId, uint128 maxClaimableAmount) public view returns (bytes32) {
        return _typedDataHash(keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, maxClaimableAmount)));
    }

    function getRefundDigest(bytes32 channelId, uint256 nonce, uint128 amount) public view returns (bytes32) {
        return _typedDataHash(keccak256(abi.encode(REFUND_TYPEHASH, channelId, nonce, amount)));
    }

    /// @notice The digest of `ClaimBatch{claims: ClaimEntry[]}` the receiver authorizer signs.
    function getClaimBatchDigest(VoucherClaim[] calldata voucherClaims) public view returns (bytes32) {
        bytes32[] memory entryHashes = new bytes32[](voucherClaims.length);
        for (uint256 i = 0; i < voucherClaims.length; ++i) {
            VoucherClaim calldata row = voucherClaims[i];
            entryHashes[i] = keccak256(
                abi.encode(
                    CLAIM_ENTRY_TYPEHASH,
                    getChannelId(row.voucher.channel),
                    row.voucher.maxClaimableAmount,
                    row.totalClaimed
                )
            );
        }
        // EIP-712 encodes an array member as the hash of its elements' hashStruct concatenated.
        return _typedDataHash(keccak256(abi.encode(CLAIM_BATCH_TYPEHASH, keccak256(abi.encodePacked(entryHashes)))));
    }

    // ------------------------------------------------------------------ internals

    function _typedDataHash(bytes32 structHash) private view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), structHash));
    }

    /// @dev A deposit may only open or top up a channel whose terms can be honoured.
    function _requireOpenableConfig(ChannelConfig calldata config) private pure {
        if (
            config.payer == address(0) || config.receiver == address(0) || config.receiverAuthorizer == address(0)
                || config.token == address(0)
        ) revert InvalidChannel();
        if (config.withdrawDelay < MIN_WITHDRAW_DELAY || config.withdrawDelay > MAX_WITHDRAW_DELAY) {
            revert WithdrawDelayOutOfRange();
        }
    }

    function _isReceiverSide(address sender, ChannelConfig calldata config) private pure returns (bool) {
        return sender == config.receiver || sender == config.receiverAuthorizer;
    }

    function _requirePayerSide(ChannelConfig calldata config) private view {
        if (msg.sender != config.payer && msg.sender != config.payerAuthorizer) revert NotPayerSide();
    }

    function _unclaimed(ChannelState storage ch) private view returns (uint128) {
        return ch.balance - ch.totalClaimed;
    }

    /// @dev Raises the channel's claimed total to the row's cumulative `totalClaimed`. A row at or
    ///      below what is already claimed changes nothing (a replayed or superseded voucher), so no
    ///      amount is ever claimed twice.
    function _applyClaim(VoucherClaim calldata row) private {
        ChannelConfig calldata config = row.voucher.channel;
        bytes32 channelId = getChannelId(config);
        ChannelState storage ch = channels[channelId];
        uint128 claimedBefore = ch.totalClaimed;
        if (row.totalClaimed <= claimedBefore) return;
        if (row.totalClaimed > row.voucher.maxClaimableAmount) revert ClaimAboveVoucher();
        if (row.totalClaimed > ch.balance) revert ClaimAboveBalance();
        bytes32 digest = getVoucherDigest(channelId, row.voucher.maxClaimableAmount);
        bool signed = config.payerAuthorizer != address(0)
            ? _recover(digest, row.signature) == config.payerAuthorizer
            : _isValidSignature(config.payer, digest, row.signature);
        if (!signed) revert InvalidSignature();

        uint128 delta = row.totalClaimed - claimedBefore;
        ch.totalClaimed = row.totalClaimed;
        receivers[config.receiver][config.token].totalClaimed += delta;
        emit Claimed(channelId, msg.sender, delta, row.totalClaimed);
    }

    /// @dev Advances the refund nonce (even when nothing is left to refund), pays back
    ///      min(amount, unclaimed) and shrinks or cancels a pending withdrawal by as much.
    function _refund(ChannelConfig calldata config, bytes32 channelId, uint128 amount) private {
        if (amount == 0) revert ZeroAmount();
        refundNonce[channelId] += 1;
        ChannelState storage ch = channels[channelId];
        uint128 available = _unclaimed(ch);
        uint128 paid = amount < available ? amount : available;
        if (paid == 0) return;
        ch.balance -= paid;
        Withdrawal storage pending = pendingWithdrawals[channelId];
        if (pending.initiatedAt != 0) {
            if (paid >= pending.amount) delete pendingWithdrawals[channelId];
            else pending.amount -= paid;
        }
        emit Refunded(channelId, msg.sender, paid);
        if (ch.balance == 0 && ch.totalClaimed == 0) emit ChannelClosed(channelId, config);
        _pay(config.token, config.payer, paid);
    }

    /// @dev ERC-20 transfer that accepts tokens returning nothing and refuses `false` or a revert.
    function _pay(address token, address to, uint256 amount) private {
        (bool ok, bytes memory returned) = token.call(abi.encodeWithSelector(0xa9059cbb, to, amount));
        if (!ok || (returned.length != 0 && !abi.decode(returned, (bool))) || token.code.length == 0) {
            revert TokenTransferFailed();
        }
    }

    /// @dev True when `signer` signed `digest`: a 65-byte ECDSA signature by that key, or, for a
    ///      contract account, its ERC-1271 `isValidSignature` answer.
    function _isValidSignature(address signer, bytes32 digest, bytes calldata signature) private view returns (bool) {
        if (signer == address(0)) return false;
        if (_recover(digest, signature) == signer) return true;
        if (signer.code.length == 0) return false;
        (bool ok, bytes memory returned) =
            signer.staticcall(abi.encodeCall(IERC1271.isValidSignature, (digest, signature)));
        return ok && returned.length >= 32 && abi.decode(returned, (bytes4)) == ERC1271_MAGIC_VALUE;
    }

    /// @dev The ECDSA signer of a 65-byte (r, s, v) signature, or zero when it is malformed, has a
    ///      high `s` (the malleable twin) or recovers nothing.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (uint256(s) > HALF_CURVE_ORDER || (v != 27 && v != 28)) return address(0);
        return ecrecover(digest, v, r, s);
    }
}
